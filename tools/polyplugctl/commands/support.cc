#include "polyplugctl/commands/support.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <system_error>

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
  if (absl::IsDeadlineExceeded(status) &&
      client::FailureReasonOf(status) == v1::FAILURE_REASON_UNSPECIFIED) {
    return kExitUnreachable;
  }
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
