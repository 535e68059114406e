#include "polyplugctl/commands/support.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "polyplug/client/host_client.h"

namespace polyplug::ctl {

namespace v1 = host::v1;

int Usage(absl::string_view message, absl::string_view help) {
  std::fprintf(stderr, "polyplugctl: %.*s\n\n%.*s", static_cast<int>(message.size()),
               message.data(), static_cast<int>(help.size()), help.data());
  return kExitUsage;
}

int Misuse(const Invocation& ctx, absl::string_view message) { return Usage(message, ctx.help); }

int ExitCodeOf(const absl::Status& status) {
  if (absl::IsUnavailable(status) || absl::IsUnauthenticated(status)) return kExitUnreachable;
  const bool host_reason = client::FailureReasonOf(status) != v1::FAILURE_REASON_UNSPECIFIED;
  // UNKNOWN without the host's reason is gRPC's word for a connection that broke mid-call.
  if (absl::IsUnknown(status) && !host_reason) return kExitUnreachable;
  if (absl::IsDeadlineExceeded(status) && !host_reason) return kExitTimeout;
  return kExitFailed;
}

int Failed(const Invocation& ctx, absl::string_view what, const absl::Status& status) {
  ctx.out.Error(what, status);
  return ExitCodeOf(status);
}

std::string HostPath(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::filesystem::path absolute = std::filesystem::absolute(path, ec);
    if (!ec) return absolute.lexically_normal().string();
  }
  return path;
}

void PrintTable(const Output& out, const std::vector<std::vector<std::string>>& rows, bool header) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    std::string line;
    for (size_t i = 0; i < rows[r].size(); ++i) {
      std::string cell = rows[r][i];
      if (i + 1 < rows[r].size()) cell.resize(widths[i] + 2, ' ');
      absl::StrAppend(&line, cell);
    }
    out.Line(r == 0 && header ? out.Paint(line, Color::kBold) : line);
  }
}

absl::StatusOr<uint32_t> ParseUint(absl::string_view flag, const std::string& text) {
  uint32_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " wants a non-negative number, not '", text, "'"));
  }
  return value;
}

bool ConnectionBroke(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsUnknown(status);
}

std::vector<v1::QuarantinedVersion> CrashedDuring(Context& ctx, const v1::HostInfo& before) {
  client::CallOptions wait = ctx.call;
  wait.wait_for_ready = true;
  auto after = ctx.client.GetHostInfo(wait);
  std::vector<v1::QuarantinedVersion> crashed;
  if (!after.ok() || after->host_epoch() == before.host_epoch()) return crashed;
  for (const v1::QuarantinedVersion& q : after->quarantined()) {
    if (q.restart() > before.restarts()) crashed.push_back(q);
  }
  ctx.out.Note(absl::StrCat("the host crashed; its supervisor restarted it (restart ",
                            after->restarts(), ")"));
  return crashed;
}

}  // namespace polyplug::ctl

namespace polyplug::ctl {

bool ResponseLost(const absl::Status& status) {
  return client::FailureReasonOf(status) == v1::FAILURE_REASON_UNSPECIFIED &&
         (absl::IsDeadlineExceeded(status) || ConnectionBroke(status));
}

absl::Status OperationStatus(const v1::Operation& operation) {
  if (operation.code() == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(operation.code()), operation.message());
}

Recovered RecoverLostResponse(Context& ctx, absl::string_view what, const absl::Status& status) {
  Recovered recovered;
  const std::string& id = ctx.call.request_id;
  if (id.empty() || !ResponseLost(status)) return recovered;
  // A first look without waiting (and without wait_for_ready: a host that cannot be reached
  // now is not waited for; restarted, it would not remember the operation anyway).
  client::CallOptions look;
  look.timeout = std::min(ctx.recover_timeout, absl::Seconds(5));
  auto operation = ctx.client.GetOperation(id, /*wait=*/false, look);
  if (operation.ok() && !operation->done()) {
    ctx.out.Note(absl::StrCat(what, ": no answer (", absl::StatusCodeToString(status.code()),
                              "), but the host runs it (request id ", id,
                              "): waiting for its outcome up to --recover-timeout ",
                              absl::FormatDuration(ctx.recover_timeout)));
    client::CallOptions wait;
    wait.timeout = ctx.recover_timeout;
    operation = ctx.client.GetOperation(id, /*wait=*/true, wait);
    if (!operation.ok() && absl::IsDeadlineExceeded(operation.status()) &&
        client::FailureReasonOf(operation.status()) == v1::FAILURE_REASON_UNSPECIFIED) {
      // The wait ended: one more look tells a running operation from a silent host.
      operation = ctx.client.GetOperation(id, /*wait=*/false, look);
    }
  }
  if (!operation.ok()) {
    // Unreachable before and now: the call's own error says it all.
    const bool unreachable = absl::IsUnavailable(status) && absl::IsUnavailable(operation.status());
    if (!unreachable) {
      ctx.out.Note(absl::StrCat(
          what, ": no answer, and no outcome for request id ", id, ": ",
          absl::StatusCodeToString(operation.status().code()), ": ", operation.status().message(),
          client::FailureReasonOf(operation.status()) == v1::FAILURE_REASON_OPERATION_NOT_FOUND
              ? " (so it did not run there: a retry runs it)"
              : ""));
    }
    return recovered;
  }
  if (!operation->done()) {
    ctx.out.Error(what, absl::DeadlineExceededError(absl::StrCat(
                            "the ", operation->method(), " with request id ", id,
                            " was still running on the host when --recover-timeout ",
                            absl::FormatDuration(ctx.recover_timeout),
                            " passed; `polyplugctl operation ", id, " --wait` follows it")));
    recovered.exit_code = kExitTimeout;
    return recovered;
  }
  ctx.out.Note(absl::StrCat(what, ": no answer (", absl::StatusCodeToString(status.code()),
                            "); the host's record of request id ", id, " has the outcome"));
  recovered.operation = *std::move(operation);
  return recovered;
}

}  // namespace polyplug::ctl
