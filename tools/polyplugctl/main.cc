// polyplugctl: drives a running polyplug-host from a terminal or a CI job.
//
// Exit codes: 0 success; 1 the reload or operation failed (the reason is printed);
// 2 usage error; 3 the host is unreachable or refused the credentials.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "polyplug/client/host_client.h"
#include "polyplug/identity.hpp"
#include "polyplugctl/command_line.h"
#include "polyplugctl/output.h"
#include "wire/wire.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;
using client::HostClient;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

constexpr char kGlobalHelp[] =
    R"(polyplugctl: drive a running polyplug-host (reload, load, look up, watch), and
compute bundle and contract ids.

usage: polyplugctl [global options] COMMAND [arguments] [options]

commands:
  reload BUNDLE                 hot-reload a bundle (a name, or a path inside a bundle root)
  load PATH                     load the bundle directory at PATH
  unload BUNDLE [--cascade]     unload a bundle (--cascade: its dependents first)
  find CONTRACT[@MAJOR] [--min-version N]
                                look a contract up
  list bundles|contracts        the loaded bundles, or the published contract providers
  watch [--from SEQ] [--until-terminal] [--count N] [--bundle NAME]...
                                print phase events as they happen
  info                          the host's version, epoch, revision, roots and counters
  health [--bundle NAME]        the host's (or a bundle's) serving status
  call CONTRACT METHOD [--data TEXT|@FILE]
                                run a method of a contract inside the host
  id NAME|CONTRACT@MAJOR...     a bundle's or a guest contract's id, in decimal and hex
                                (needs no host)
  help [COMMAND]                this text, or a command's

global options (before or after the command):
  --host TARGET        unix:PATH or HOST:PORT (default: $POLYPLUG_HOST, else the host's
                       default socket, unix:$XDG_RUNTIME_DIR/polyplug-host.sock)
  --token-file FILE    send the bearer token in FILE
  --timeout DURATION   deadline of each call, e.g. 30s, 2m, 500ms (default 60s); for watch,
                       how long to watch (default: until it ends or is interrupted)
  --json               one JSON object per line on stdout, with host.proto's field names
  --color WHEN         auto (default: only on a terminal), always or never
  --tls                use TLS (system roots unless --tls-ca)
  --tls-ca FILE        trust the CA certificates in FILE (implies --tls)
  --tls-cert FILE      client certificate for mTLS (with --tls-key; implies --tls)
  --tls-key FILE       client key for --tls-cert
  --tls-server-name N  the name to check the server certificate against

exit codes: 0 success; 1 the reload or operation failed (reason printed);
            2 usage error; 3 host unreachable or authentication failed.
)";

struct Context {
  const CommandLine& args;
  Output& out;
  HostClient& client;
  client::CallOptions call;
  std::optional<absl::Duration> timeout;  // --timeout as given
  const char* help;                       // the command's usage text
};

// A usage error of the running command: the message, then the command's help; exit code 2.
int Misuse(const Context& ctx, absl::string_view message) {
  std::fprintf(stderr, "polyplugctl: %.*s\n\n%s", static_cast<int>(message.size()), message.data(),
               ctx.help);
  return kExitUsage;
}

// A usage error outside a command's run: the message, then `help`; exit code 2.
int Usage(const std::string& message, const char* help) {
  std::fprintf(stderr, "polyplugctl: %s\n\n%s", message.c_str(), help);
  return kExitUsage;
}

struct CommandSpec {
  const char* name;
  const char* help;
  std::vector<std::string> flags;  // beyond the global ones
  size_t min_operands;
  size_t max_operands;
  int (*run)(Context& ctx);
  // Set instead of `run` (null) by a command that needs no host (id): it runs before any
  // client is made, so host, token, TLS and timeout flags are neither read nor checked.
  int (*run_offline)(const CommandLine& args, const Output& out, const char* help) = nullptr;
};

int ExitCodeOf(const absl::Status& status) {
  if (absl::IsUnavailable(status) || absl::IsUnauthenticated(status)) return kExitUnreachable;
  if (absl::IsDeadlineExceeded(status) &&
      client::FailureReasonOf(status) == v1::FAILURE_REASON_UNSPECIFIED) {
    return kExitUnreachable;
  }
  return kExitFailed;
}

// A path for the host: made absolute when it names something here, since the host resolves
// relative paths against its own working directory.
std::string HostPath(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::filesystem::path absolute = std::filesystem::absolute(path, ec);
    if (!ec) return absolute.lexically_normal().string();
  }
  return path;
}

// Pads the columns of `rows` (the first is the header, unless !header) to a common width.
void PrintTable(const Output& out, const std::vector<std::vector<std::string>>& rows,
                bool header = true) {
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

std::string HandleText(const Output& out, const v1::ContractHandle& h) {
  return absl::StrCat(h.contract_name(), "@", h.contract_version().major(), " -> ",
                      out.Paint(h.provider_bundle_name(), Color::kBold), " ",
                      Output::VersionText(h.provider_version()), "  (slot ", h.index(),
                      ", generation ", h.generation(), ", plugin \"", h.plugin_name(),
                      "\", contract ", Output::VersionText(h.contract_version()),
                      h.invocable() ? ", invocable" : "", ")");
}

// Whether `status` says the connection to the host broke (which a crash of it does).
bool ConnectionBroke(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsUnknown(status);
}

// After a call broke the connection to a host under --supervise (`before`: its GetHostInfo
// from before the call): waits for the restarted host and returns the versions it
// quarantined because of this crash. Empty when it did not restart or blamed no bundle.
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

// A reload that crashed the host, as the host would have answered it had it lived.
v1::ReloadResponse CrashedReload(const std::vector<v1::QuarantinedVersion>& crashed) {
  v1::ReloadResponse response;
  response.set_outcome(v1::RELOAD_OUTCOME_FAILED);
  response.set_reason(v1::FAILURE_REASON_CRASHED);
  response.set_message(crashed.front().message());
  response.set_bundle_name(crashed.front().bundle_name());
  for (const v1::QuarantinedVersion& q : crashed) {
    v1::ReloadPhaseEvent* e = response.add_events();
    e->set_kind(v1::EVENT_KIND_PHASE);
    e->set_phase(v1::PHASE_FAILED);
    e->set_bundle_name(q.bundle_name());
    *e->mutable_bundle_version() = q.version();
    *e->mutable_time() = q.crashed_at();
    e->set_reason(v1::FAILURE_REASON_CRASHED);
    e->set_message(q.message());
    e->set_artifact_sha256(q.artifact_sha256());
  }
  return response;
}

int RunReload(Context& ctx) {
  const std::string& bundle = ctx.args.operands()[0];
  const std::string target = bundle.find('/') != std::string::npos ? HostPath(bundle) : bundle;
  // A bundle that crashes the host kills the connection before any answer; a supervised
  // host comes back and says what crashed. Its epoch before tells the restart apart.
  auto before = ctx.client.GetHostInfo(ctx.call);
  auto response = ctx.client.Reload(target, ctx.call);
  if (!response.ok() && ConnectionBroke(response.status()) && before.ok() && before->supervised()) {
    if (auto crashed = CrashedDuring(ctx, *before); !crashed.empty()) {
      response = CrashedReload(crashed);
    }
  }
  if (!response.ok()) {
    ctx.out.Error(absl::StrCat("reload ", bundle), response.status());
    return ExitCodeOf(response.status());
  }
  std::vector<std::string> failed_dependents;
  std::string previous_version;
  for (const v1::ReloadPhaseEvent& e : response->events()) {
    if (e.phase() == v1::PHASE_FAILED && e.parent_reload_id() != 0) {
      failed_dependents.push_back(e.bundle_name());
    }
    if (e.phase() == v1::PHASE_PREPARING && e.reload_id() == response->reload_id()) {
      previous_version = Output::VersionText(e.bundle_version());
    }
  }
  const bool reloaded = response->outcome() == v1::RELOAD_OUTCOME_RELOADED;
  if (ctx.out.json()) {
    ctx.out.Json(*response);
  } else {
    if (reloaded) {
      std::string version;
      for (const v1::ReloadPhaseEvent& e : response->events()) {
        if (e.phase() == v1::PHASE_RELOADED && e.reload_id() == response->reload_id()) {
          version = Output::VersionText(e.bundle_version());
        }
      }
      ctx.out.Line(absl::StrCat(
          ctx.out.PhaseWord(v1::PHASE_RELOADED), " ", response->bundle_name(), " ", version,
          previous_version.empty() ? "" : " (was " + previous_version + ")", "  reload ",
          response->reload_id(), ", revision ", response->registry_revision()));
    } else {
      ctx.out.Line(absl::StrCat(ctx.out.PhaseWord(v1::PHASE_FAILED), " ", response->bundle_name(),
                                ": [", client::ReasonToken(response->reason()), "] ",
                                response->message()));
      if (response->reason() == v1::FAILURE_REASON_CRASHED && previous_version.empty()) {
        ctx.out.Line("  the host restarted with the last healthy version of each bundle");
      } else {
        ctx.out.Line(absl::StrCat("  the previous version ", previous_version,
                                  previous_version.empty() ? "" : " ", "is still live"));
      }
    }
    for (const v1::ReloadPhaseEvent& e : response->events()) {
      ctx.out.Line(absl::StrCat("  ", ctx.out.EventText(e)));
    }
    if (!failed_dependents.empty()) {
      ctx.out.Note(absl::StrCat("dependents failed to follow the reload: ",
                                absl::StrJoin(failed_dependents, ", ")));
    }
  }
  return reloaded && failed_dependents.empty() ? kExitOk : kExitFailed;
}

int RunLoad(Context& ctx) {
  const std::string& path = ctx.args.operands()[0];
  auto response = ctx.client.LoadBundle(HostPath(path), ctx.call);
  if (!response.ok()) {
    ctx.out.Error(absl::StrCat("load ", path), response.status());
    return ExitCodeOf(response.status());
  }
  if (ctx.out.json()) {
    ctx.out.Json(*response);
  } else {
    const v1::Bundle& b = response->bundle();
    ctx.out.Line(absl::StrCat(ctx.out.PhaseWord(v1::PHASE_LOADED), " ", b.name(), " ",
                              Output::VersionText(b.version()), " from ", b.dir()));
    ctx.out.Line(absl::StrCat(
        "  provides ", b.provides().empty() ? "nothing" : absl::StrJoin(b.provides(), ", ")));
  }
  return kExitOk;
}

int RunUnload(Context& ctx) {
  const std::string& name = ctx.args.operands()[0];
  auto response = ctx.client.UnloadBundle(name, ctx.args.Has("cascade"), ctx.call);
  if (!response.ok()) {
    ctx.out.Error(absl::StrCat("unload ", name), response.status());
    return ExitCodeOf(response.status());
  }
  if (ctx.out.json()) {
    ctx.out.Json(*response);
  } else {
    ctx.out.Line(absl::StrCat("unloaded ", absl::StrJoin(response->unloaded(), ", ")));
  }
  return kExitOk;
}

absl::StatusOr<uint32_t> ParseUint(absl::string_view flag, const std::string& text) {
  uint32_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " wants a non-negative number, not '", text, "'"));
  }
  return value;
}

int RunFind(Context& ctx) {
  const std::string& contract = ctx.args.operands()[0];
  uint32_t min_version = 0;
  if (ctx.args.Has("min-version")) {
    auto parsed = ParseUint("min-version", ctx.args.Get("min-version"));
    if (!parsed.ok()) return Misuse(ctx, parsed.status().message());
    min_version = *parsed;
  }
  auto handle = ctx.client.FindContract(contract, min_version, ctx.call);
  if (!handle.ok()) {
    ctx.out.Error(absl::StrCat("find ", contract), handle.status());
    return ExitCodeOf(handle.status());
  }
  if (ctx.out.json()) {
    ctx.out.Json(*handle);
  } else {
    ctx.out.Line(HandleText(ctx.out, *handle));
  }
  return kExitOk;
}

int RunList(Context& ctx) {
  const std::string& what = ctx.args.operands()[0];
  if (what == "bundles") {
    if (ctx.args.Has("bundle")) return Misuse(ctx, "--bundle is for 'list contracts'");
    auto response = ctx.client.ListBundles(ctx.call);
    if (!response.ok()) {
      ctx.out.Error("list bundles", response.status());
      return ExitCodeOf(response.status());
    }
    if (ctx.out.json()) {
      for (const v1::Bundle& b : response->bundles()) ctx.out.Json(b);
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {
        {"NAME", "VERSION", "RELOADS", "PROVIDES", "DIR"}};
    for (const v1::Bundle& b : response->bundles()) {
      rows.push_back({b.name(), Output::VersionText(b.version()), absl::StrCat(b.reload_count()),
                      absl::StrJoin(b.provides(), ","), b.dir()});
    }
    PrintTable(ctx.out, rows);
    return kExitOk;
  }
  if (what == "contracts") {
    const std::string bundle = ctx.args.Get("bundle");
    auto response = ctx.client.ListContracts(bundle, ctx.call);
    if (!response.ok()) {
      ctx.out.Error("list contracts", response.status());
      return ExitCodeOf(response.status());
    }
    if (ctx.out.json()) {
      for (const v1::ContractHandle& h : response->contracts()) ctx.out.Json(h);
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {
        {"CONTRACT", "PROVIDER", "VERSION", "SLOT", "GENERATION", "PLUGIN"}};
    for (const v1::ContractHandle& h : response->contracts()) {
      rows.push_back({absl::StrCat(h.contract_name(), "@", h.contract_version().major()),
                      h.provider_bundle_name(), Output::VersionText(h.provider_version()),
                      absl::StrCat(h.index()), absl::StrCat(h.generation()), h.plugin_name()});
    }
    PrintTable(ctx.out, rows);
    return kExitOk;
  }
  return Misuse(ctx, absl::StrCat("list what? 'bundles' or 'contracts', not '", what, "'"));
}

int RunCall(Context& ctx) {
  const std::string& contract = ctx.args.operands()[0];
  const std::string& method = ctx.args.operands()[1];
  uint32_t min_version = 0;
  if (ctx.args.Has("min-version")) {
    auto parsed = ParseUint("min-version", ctx.args.Get("min-version"));
    if (!parsed.ok()) return Misuse(ctx, parsed.status().message());
    min_version = *parsed;
  }
  std::string request = ctx.args.Get("data");
  if (!request.empty() && request[0] == '@') {
    std::ifstream in(request.substr(1), std::ios::binary);
    if (!in) return Misuse(ctx, absl::StrCat("--data ", request, ": cannot read the file"));
    std::stringstream buffer;
    buffer << in.rdbuf();
    request = buffer.str();
  }
  auto before = ctx.client.GetHostInfo(ctx.call);
  auto response = ctx.client.InvokeOnce(contract, method, request, min_version, ctx.call);
  if (!response.ok() && ConnectionBroke(response.status()) && before.ok() && before->supervised()) {
    if (auto crashed = CrashedDuring(ctx, *before); !crashed.empty()) {
      // As the host words its errors: "[REASON] message".
      response = absl::FailedPreconditionError(absl::StrCat(
          "[", client::ReasonToken(v1::FAILURE_REASON_CRASHED), "] ", crashed.front().message()));
    }
  }
  if (!response.ok()) {
    ctx.out.Error(absl::StrCat("call ", contract, " ", method), response.status());
    return ExitCodeOf(response.status());
  }
  if (ctx.out.json()) {
    ctx.out.Json(*response);
  } else {
    const std::string& bytes = response->response();
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    if (bytes.empty() || bytes.back() != '\n') std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  return kExitOk;
}

// One operand of `id`: a bundle name, or CONTRACT@MAJOR for a guest contract.
struct IdOperand {
  std::string operand;
  std::string name;               // the bundle name, or the bare contract name
  std::optional<uint32_t> major;  // set for a guest contract
  uint64_t id = 0;
};

absl::StatusOr<IdOperand> ParseIdOperand(const std::string& operand) {
  IdOperand parsed{operand, operand, std::nullopt, 0};
  if (operand.empty()) {
    return absl::InvalidArgumentError(
        "an empty operand names nothing (a bundle name or CONTRACT@MAJOR)");
  }
  if (const size_t at = operand.rfind('@'); at != std::string::npos) {
    parsed.name = operand.substr(0, at);
    const std::string digits = operand.substr(at + 1);
    uint32_t major = 0;
    if (digits.empty() ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        !absl::SimpleAtoi(digits, &major)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", operand, "': the major after '@' must be a decimal number from 0 to 4294967295"));
    }
    if (parsed.name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", operand, "': no contract name before '@'"));
    }
    parsed.major = major;
    parsed.id = ::polyplug::GuestContractId(parsed.name, major);
  } else {
    parsed.id = ::polyplug::BundleId(parsed.name);
  }
  return parsed;
}

// As the host's errors print ids: bundle ids in lower-case hex without padding, contract
// ids in 16 upper-case hex digits (polyplug::core::FormatBundleId / FormatContractId).
std::string IdHex(const IdOperand& id) {
  if (!id.major) return absl::StrCat("0x", absl::Hex(id.id));
  return absl::StrCat("0x",
                      absl::AsciiStrToUpper(absl::StrCat(absl::Hex(id.id, absl::kZeroPad16))));
}

int RunId(const CommandLine& args, const Output& out, const char* help) {
  std::vector<IdOperand> ids;
  for (const std::string& operand : args.operands()) {
    auto parsed = ParseIdOperand(operand);
    if (!parsed.ok()) return Usage(absl::StrCat("id: ", parsed.status().message()), help);
    ids.push_back(*std::move(parsed));
  }
  std::vector<std::vector<std::string>> rows;
  for (const IdOperand& id : ids) {
    const std::string canonical = id.major ? absl::StrCat(id.name, "@", *id.major) : id.name;
    if (out.json()) {
      google::protobuf::Struct root;
      auto& fields = *root.mutable_fields();
      fields["kind"].set_string_value(id.major ? "GUEST_CONTRACT" : "BUNDLE");
      fields["name"].set_string_value(canonical);
      if (id.major) {
        fields["contract_name"].set_string_value(id.name);
        fields["major"].set_number_value(*id.major);
      }
      // A string, as proto3 JSON writes a uint64: a double would lose digits.
      fields["id"].set_string_value(absl::StrCat(id.id));
      fields["id_hex"].set_string_value(IdHex(id));
      out.Json(root);
    } else {
      rows.push_back({canonical, id.major ? "contract" : "bundle", absl::StrCat(id.id), IdHex(id)});
    }
  }
  if (!out.json()) PrintTable(out, rows, /*header=*/false);
  return kExitOk;
}

int RunInfo(Context& ctx) {
  auto info = ctx.client.GetHostInfo(ctx.call);
  if (!info.ok()) {
    ctx.out.Error("info", info.status());
    return ExitCodeOf(info.status());
  }
  if (ctx.out.json()) {
    ctx.out.Json(*info);
    return kExitOk;
  }
  const absl::Duration uptime = wire::FromProto(info->uptime());
  PrintTable(ctx.out,
             {{"polyplug-host", info->version()},
              {"target", ctx.client.target()},
              {"listening on", absl::StrJoin(info->listen_addresses(), ", ")},
              {"host epoch", absl::StrCat(info->host_epoch())},
              {"uptime", absl::FormatDuration(absl::Trunc(uptime, absl::Seconds(1)))},
              {"bundle roots", absl::StrJoin(info->bundle_roots(), ", ")},
              {"hot reload", info->hot_reload_enabled() ? "enabled" : "disabled"},
              {"bundles", absl::StrCat(info->bundle_count())},
              {"contracts", absl::StrCat(info->contract_count())},
              {"registry revision", absl::StrCat(info->registry_revision())},
              {"events", absl::StrCat("seq ", info->earliest_seq(), "..", info->last_seq(),
                                      " kept (capacity ", info->journal_capacity(), ")")},
              {"subscribers", absl::StrCat(info->subscriber_count())},
              {"remote instances",
               absl::StrCat(info->instance_count(), " in ", info->session_count(), " session(s)")},
              {"supervised", info->supervised()
                                 ? absl::StrCat("yes, restarted ", info->restarts(), " time(s)")
                                 : "no"}});
  for (const v1::QuarantinedVersion& q : info->quarantined()) {
    ctx.out.Line(absl::StrCat("quarantined: ", q.bundle_name(), " ",
                              Output::VersionText(q.version()), " (artifact sha256 ",
                              q.artifact_sha256().substr(0, 12), "): ", q.signal(), " in ",
                              q.during()));
  }
  return kExitOk;
}

int RunHealth(Context& ctx) {
  const std::string service = ctx.args.Get("bundle");
  auto status = ctx.client.CheckHealth(service, ctx.call);
  if (!status.ok()) {
    ctx.out.Error("health", status.status());
    return ExitCodeOf(status.status());
  }
  const std::string name(client::ServingStatusName(*status));
  if (ctx.out.json()) {
    google::protobuf::Struct root;
    (*root.mutable_fields())["service"].set_string_value(service);
    (*root.mutable_fields())["status"].set_string_value(name);
    ctx.out.Json(root);
  } else {
    ctx.out.Line(
        absl::StrCat(ctx.out.Paint(name, *status == client::ServingStatus::kServing ? Color::kGreen
                                                                                    : Color::kRed),
                     service.empty() ? "" : "  " + service));
  }
  return *status == client::ServingStatus::kServing ? kExitOk : kExitFailed;
}

// Ends `watch`: the first Finish() wins.
class WatchEnd {
 public:
  void Finish(int code) {
    std::lock_guard<std::mutex> lock(mu_);
    if (code_) return;
    code_ = code;
    done_.notify_all();
  }
  bool finished() {
    std::lock_guard<std::mutex> lock(mu_);
    return code_.has_value();
  }
  // The exit code, once finished or after `timeout` (then kExitFailed).
  int Wait(std::optional<absl::Duration> timeout, bool* timed_out) {
    std::unique_lock<std::mutex> lock(mu_);
    if (timeout) {
      *timed_out = !done_.wait_for(lock, absl::ToChronoNanoseconds(*timeout),
                                   [this] { return code_.has_value(); });
      if (*timed_out) return kExitFailed;
    } else {
      done_.wait(lock, [this] { return code_.has_value(); });
    }
    return *code_;
  }

 private:
  std::mutex mu_;
  std::condition_variable done_;
  std::optional<int> code_;
};

// The watch's end, for the signal thread too. Never destroyed, so that a signal arriving
// while the watch returns (or the process exits) finds it alive.
WatchEnd& TheWatchEnd() {
  static auto* end = new WatchEnd;
  return *end;
}
std::atomic<bool> g_watching{false};

int RunWatch(Context& ctx) {
  client::SubscribeOptions options;
  options.bundle_names = ctx.args.GetAll("bundle");
  std::optional<uint32_t> count;
  if (ctx.args.Has("count")) {
    auto parsed = ParseUint("count", ctx.args.Get("count"));
    if (!parsed.ok()) return Misuse(ctx, parsed.status().message());
    if (*parsed == 0) return Misuse(ctx, "--count must be at least 1");
    count = *parsed;
  }
  const bool until_terminal = ctx.args.Has("until-terminal");
  if (ctx.args.Has("from")) {
    // SEQ (of the host's current epoch) or EPOCH:SEQ; events from SEQ on.
    const std::string from = ctx.args.Get("from");
    std::vector<std::string> parts = absl::StrSplit(from, ':');
    uint64_t epoch = 0, seq = 0;
    bool ok = parts.size() <= 2 && absl::SimpleAtoi(parts.back(), &seq) && seq >= 1;
    if (ok && parts.size() == 2) ok = absl::SimpleAtoi(parts[0], &epoch);
    if (!ok) {
      return Misuse(ctx,
                    absl::StrCat("--from wants SEQ or EPOCH:SEQ with SEQ >= 1, not '", from, "'"));
    }
    if (parts.size() == 1) {
      auto info = ctx.client.GetHostInfo(ctx.call);
      if (!info.ok()) {
        ctx.out.Error("watch", info.status());
        return ExitCodeOf(info.status());
      }
      epoch = info->host_epoch();
    }
    options.resume_after = client::Cursor{epoch, seq - 1};
    options.strict_resume = true;
  }

  WatchEnd& end = TheWatchEnd();
  g_watching = true;
  std::mutex print_mu;  // handlers run on the subscription thread; notes come from it too
  uint32_t seen = 0;
  bool ever_connected = false;
  client::PhaseHandlers handlers;
  auto on_event = [&](const client::PhaseEvent& event) {
    if (end.finished()) return;  // the subscription runs on until it is destroyed
    const v1::ReloadPhaseEvent proto = client::PhaseEventToProto(event);
    {
      std::lock_guard<std::mutex> lock(print_mu);
      if (ctx.out.json()) {
        ctx.out.Json(proto);
      } else {
        ctx.out.Line(ctx.out.EventText(proto));
      }
    }
    ++seen;
    if (until_terminal && event.IsTerminal() && event.parent_reload_id == 0) {
      end.Finish(event.phase == client::Phase::kReloaded ? kExitOk : kExitFailed);
    } else if (count && seen >= *count) {
      end.Finish(kExitOk);
    }
  };
  handlers.on_preparing = handlers.on_reloaded = handlers.on_failed = handlers.on_unloading =
      handlers.on_loaded = on_event;
  handlers.on_host_restarted = [&](const client::HostRestarted& restarted) {
    std::lock_guard<std::mutex> lock(print_mu);
    if (ctx.out.json()) {
      google::protobuf::Struct root;
      (*root.mutable_fields())["kind"].set_string_value("HOST_RESTARTED");
      (*root.mutable_fields())["previous_epoch"].set_string_value(
          absl::StrCat(restarted.previous_epoch));
      (*root.mutable_fields())["host_epoch"].set_string_value(absl::StrCat(restarted.epoch));
      ctx.out.Json(root);
    } else {
      ctx.out.Line(
          ctx.out.Paint(absl::StrCat("-- the host restarted (epoch ", restarted.previous_epoch,
                                     " -> ", restarted.epoch, "); seq numbers start over"),
                        Color::kYellow));
    }
  };
  handlers.on_resynced = [&](const client::Resynced& resynced) {
    std::lock_guard<std::mutex> lock(print_mu);
    std::vector<std::string> bundles;
    for (const client::BundleState& b : resynced.bundles) {
      bundles.push_back(absl::StrCat(b.name, " ", b.version.ToString()));
    }
    if (ctx.out.json()) {
      google::protobuf::Struct root;
      auto& fields = *root.mutable_fields();
      fields["kind"].set_string_value("RESYNCED");
      fields["cause"].set_string_value(std::string(client::ResyncCauseName(resynced.cause)));
      fields["host_epoch"].set_string_value(absl::StrCat(resynced.host_epoch));
      fields["seq"].set_string_value(absl::StrCat(resynced.seq));
      fields["registry_revision"].set_string_value(absl::StrCat(resynced.registry_revision));
      auto* list = fields["bundles"].mutable_list_value();
      for (const client::BundleState& b : resynced.bundles) {
        auto& entry = *list->add_values()->mutable_struct_value()->mutable_fields();
        entry["id"].set_string_value(absl::StrCat(b.id));
        entry["name"].set_string_value(b.name);
        entry["version"].set_string_value(b.version.ToString());
      }
      ctx.out.Json(root);
    } else if (resynced.cause == client::ResyncCause::kInitial) {
      ctx.out.Note(
          absl::StrCat("watching ", ctx.client.target(), " from seq ", resynced.seq + 1,
                       "; loaded: ", bundles.empty() ? "none" : absl::StrJoin(bundles, ", ")));
    } else {
      ctx.out.Line(ctx.out.Paint(
          absl::StrCat("-- resynced (", client::ResyncCauseName(resynced.cause), ") at seq ",
                       resynced.seq,
                       "; loaded: ", bundles.empty() ? "none" : absl::StrJoin(bundles, ", ")),
          Color::kYellow));
    }
  };
  handlers.on_connection_changed = [&](const absl::Status& status) {
    std::lock_guard<std::mutex> lock(print_mu);
    if (status.ok()) {
      if (ever_connected) ctx.out.Note("connected again; resuming");
      ever_connected = true;
      return;
    }
    if (!ever_connected) {
      ctx.out.Error("watch", status);
      end.Finish(ExitCodeOf(status));
      return;
    }
    ctx.out.Note(absl::StrCat("connection lost (", status.message(), "); reconnecting"));
  };
  handlers.on_stopped = [&](const absl::Status& status) {
    std::lock_guard<std::mutex> lock(print_mu);
    ctx.out.Error("watch", status);
    end.Finish(ExitCodeOf(status));
  };
  int code;
  {
    std::unique_ptr<client::Subscription> subscription =
        ctx.client.Subscribe(std::move(handlers), options);
    bool timed_out = false;
    code = end.Wait(ctx.timeout, &timed_out);
    if (timed_out) {
      ctx.out.Note(absl::StrCat("watch: --timeout ", absl::FormatDuration(*ctx.timeout),
                                " passed before the watch ended"));
    }
  }  // stops the subscription: no handler runs after this
  g_watching = false;
  return code;
}

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = new std::vector<CommandSpec>{
      {"reload",
       "usage: polyplugctl reload BUNDLE\n\nHot-reloads a loaded bundle and waits for its terminal "
       "phase, the cascade to\ndependents included. BUNDLE is a bundle name, or a path (it "
       "contains '/') to the\nbundle's directory inside one of the host's bundle roots.\n\nExit "
       "code 0 when it RELOADED and every dependent followed; 1 when it FAILED\n(the previous "
       "version stays live; the reason is printed) or a dependent failed.\n",
       {},
       1,
       1,
       RunReload},
      {"load",
       "usage: polyplugctl load PATH\n\nLoads the bundle directory (or its manifest.toml) at "
       "PATH, which must lie inside\none of the host's bundle roots. A relative PATH that exists "
       "here is made absolute.\n",
       {},
       1,
       1,
       RunLoad},
      {"unload",
       "usage: polyplugctl unload BUNDLE [--cascade]\n\nUnloads a bundle. Refused "
       "(DEPENDENCY_IN_USE) while other bundles depend on it,\nunless --cascade, which unloads "
       "those dependents first.\n",
       {"cascade"},
       1,
       1,
       RunUnload},
      {"find",
       "usage: polyplugctl find CONTRACT[@MAJOR] [--min-version N]\n\nLooks a contract up, e.g. "
       "'example.greeter@1', and prints the provider's handle.\n--min-version N: only providers "
       "of major version N or later. Exit code 1 when\nnothing provides it.\n",
       {"min-version"},
       1,
       1,
       RunFind},
      {"list",
       "usage: polyplugctl list bundles\n       polyplugctl list contracts [--bundle NAME]\n\nThe "
       "loaded bundles (sorted by name), or the published contract providers\n(in registry slot "
       "order; --bundle: only that bundle's).\n",
       {"bundle"},
       1,
       1,
       RunList},
      {"watch",
       "usage: polyplugctl watch [--from SEQ|EPOCH:SEQ] [--until-terminal] [--count N]\n        "
       "                 [--bundle NAME]...\n\nPrints phase events as they happen, reconnecting "
       "and resuming after a dropped\nconnection without losing any; a host restart is "
       "announced and followed by a\nresync. --from SEQ: start with event SEQ of the host's "
       "current epoch (exit code 1\nif the host no longer has it). --until-terminal: stop after "
       "the next reload's\nterminal phase (exit code 0 RELOADED, 1 FAILED). --count N: stop after "
       "N events.\n--bundle: only these bundles' events. --timeout: give up (exit code 1) after "
       "that\nlong. Runs until interrupted otherwise.\n",
       {"from", "until-terminal", "count", "bundle"},
       0,
       0,
       RunWatch},
      {"call",
       "usage: polyplugctl call CONTRACT[@MAJOR] METHOD [--data TEXT|@FILE] [--min-version N]\n\n"
       "Runs METHOD of the contract's provider inside the host, on an instance made for\n"
       "this call, and prints the answer (a newline is added when it has none; --json prints\n"
       "an InvokeResponse, the bytes in base64). --data: the request bytes, or @FILE to read\n"
       "them from a file. Exit code 1 when the contract is not loaded or not invocable, the\n"
       "method does not exist, or the bundle's method failed (reason printed).\n",
       {"data", "min-version"},
       2,
       2,
       RunCall},
      {"info",
       "usage: polyplugctl info\n\nThe host's version, epoch, revision, roots and counters.\n",
       {},
       0,
       0,
       RunInfo},
      {"health",
       "usage: polyplugctl health [--bundle NAME]\n\nThe grpc.health.v1 status of the host, or "
       "of one loaded bundle (--bundle NAME,\nthe health service named after the bundle). Exit "
       "code 0 when SERVING, 1 otherwise\n(NOT_SERVING, or SERVICE_UNKNOWN for a bundle that is "
       "not loaded).\n",
       {"bundle"},
       0,
       0,
       RunHealth},
      {"id",
       "usage: polyplugctl id NAME|CONTRACT@MAJOR...\n\nPrints the id of each operand, one line "
       "each: for a bundle NAME its bundle id\n(FNV-1a 64 of the name), for CONTRACT@MAJOR (an "
       "operand with '@') its guest\ncontract id (FNV-1a 64 of \"guest_contract:CONTRACT@MAJOR\", "
       "MAJOR in decimal). Each\nline is the name, the kind, the id in decimal (as manifest.toml "
       "writes it) and\nin hex (as the host's errors print it). --json: one object per operand, "
       "the id\nas a string. Needs no host: it connects to nothing. Exit code 2 for an empty\n"
       "operand or a MAJOR that is not a decimal number.\n",
       {},
       1,
       std::numeric_limits<size_t>::max(),
       nullptr,
       RunId},
  };
  return *commands;
}

const std::vector<FlagSpec>& Flags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"host", true},        {"token-file", true},
      {"timeout", true},     {"json", false},
      {"color", true},       {"tls", false},
      {"tls-ca", true},      {"tls-cert", true},
      {"tls-key", true},     {"tls-server-name", true},
      {"help", false},       {"cascade", false},
      {"min-version", true}, {"bundle", true, true},
      {"from", true},        {"until-terminal", false},
      {"count", true},       {"data", true},
  };
  return *flags;
}

const std::vector<std::string>& GlobalFlags() {
  static const auto* flags = new std::vector<std::string>{
      "host",     "token-file", "timeout",         "json", "color", "tls", "tls-ca",
      "tls-cert", "tls-key",    "tls-server-name", "help"};
  return *flags;
}

absl::StatusOr<std::string> ReadFileFlag(const CommandLine& args, absl::string_view flag) {
  const std::string path = args.Get(flag);
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", path, ": cannot read"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

int Main(int argc, char** argv) {
  auto parsed = CommandLine::Parse(argc, argv, Flags());
  if (!parsed.ok()) return Usage(std::string(parsed.status().message()), kGlobalHelp);
  const CommandLine& args = *parsed;

  if (args.command().empty() || args.command() == "help") {
    if (args.command() == "help" && !args.operands().empty()) {
      for (const CommandSpec& c : Commands()) {
        if (c.name == args.operands()[0]) {
          std::fputs(c.help, stdout);
          return kExitOk;
        }
      }
      return Usage(absl::StrCat("no command '", args.operands()[0], "'"), kGlobalHelp);
    }
    if (args.command().empty() && !args.Has("help")) return Usage("no command given", kGlobalHelp);
    std::fputs(kGlobalHelp, stdout);
    return kExitOk;
  }
  const CommandSpec* command = nullptr;
  for (const CommandSpec& c : Commands()) {
    if (c.name == args.command()) command = &c;
  }
  if (command == nullptr) {
    return Usage(absl::StrCat("no command '", args.command(), "'"), kGlobalHelp);
  }
  if (args.Has("help")) {
    std::fputs(command->help, stdout);
    return kExitOk;
  }
  for (const std::string& flag : args.given()) {
    const auto& global = GlobalFlags();
    if (std::find(global.begin(), global.end(), flag) == global.end() &&
        std::find(command->flags.begin(), command->flags.end(), flag) == command->flags.end()) {
      return Usage(absl::StrCat(command->name, " takes no --", flag), command->help);
    }
  }
  if (args.operands().size() < command->min_operands ||
      args.operands().size() > command->max_operands) {
    return Usage(absl::StrCat(command->name, ": wrong number of arguments"), command->help);
  }

  const std::string color = args.Get("color", "auto");
  if (color != "auto" && color != "always" && color != "never") {
    return Usage(absl::StrCat("--color wants auto, always or never, not '", color, "'"),
                 kGlobalHelp);
  }
  Output out(args.Has("json"),
             !args.Has("json") && (color == "always" || (color == "auto" && StdoutWantsColor())));
  if (command->run_offline != nullptr) return command->run_offline(args, out, command->help);

  std::optional<absl::Duration> timeout;
  if (args.Has("timeout")) {
    absl::Duration d;
    int64_t seconds = 0;
    const std::string text = args.Get("timeout");
    if (absl::SimpleAtoi(text, &seconds)) {
      d = absl::Seconds(seconds);
    } else if (!absl::ParseDuration(text, &d)) {
      return Usage(
          absl::StrCat("--timeout wants a duration such as 30s, 2m or 500ms, not '", text, "'"),
          kGlobalHelp);
    }
    if (d <= absl::ZeroDuration()) return Usage("--timeout must be positive", kGlobalHelp);
    timeout = d;
  }

  client::ConnectOptions options;
  if (timeout) options.call_timeout = *timeout;
  if (args.Has("token-file")) {
    auto token = ReadFileFlag(args, "token-file");
    if (!token.ok()) return Usage(std::string(token.status().message()), kGlobalHelp);
    options.auth_token = std::string(absl::StripAsciiWhitespace(*token));
    if (options.auth_token.empty()) {
      return Usage(absl::StrCat("--token-file ", args.Get("token-file"), " is empty"), kGlobalHelp);
    }
  }
  options.tls = args.Has("tls") || args.Has("tls-ca") || args.Has("tls-cert");
  for (auto [flag, into] : {std::pair{"tls-ca", &options.tls_root_certs_pem},
                            std::pair{"tls-cert", &options.tls_client_cert_pem},
                            std::pair{"tls-key", &options.tls_client_key_pem}}) {
    if (!args.Has(flag)) continue;
    auto pem = ReadFileFlag(args, flag);
    if (!pem.ok()) return Usage(std::string(pem.status().message()), kGlobalHelp);
    *into = *pem;
  }
  options.tls_server_name = args.Get("tls-server-name");
  if (!options.tls_server_name.empty()) options.tls = true;

  std::string target = args.Get("host");
  if (target.empty()) {
    const char* env = std::getenv("POLYPLUG_HOST");
    target = env != nullptr && env[0] != '\0' ? env : client::DefaultHostTarget();
  }
  auto connected = HostClient::Connect(target, options);
  if (!connected.ok()) return Usage(std::string(connected.status().message()), kGlobalHelp);

  Context ctx{args, out, **connected, {}, timeout, command->help};
  return command->run(ctx);
}

}  // namespace
}  // namespace polyplug::ctl

int main(int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock detection on:
  // a lock-order graph update on every lock gRPC takes (about 6% of a busy host's CPU).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // SIGINT/SIGTERM end a watch cleanly (the stream is cancelled, the exit code is 130/143);
  // a second one, or one during any other command, ends the process at once. Blocked
  // before any thread starts, so only the waiter gets them. SIGPIPE keeps its default, so
  // that `polyplugctl watch | head -1` ends when head does (gRPC's sockets never raise it).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::thread([stop_signals] {
    bool first = true;
    while (true) {
      int signal_number = 0;
      if (sigwait(&stop_signals, &signal_number) != 0) continue;
      if (first && polyplug::ctl::g_watching.load()) {
        first = false;
        polyplug::ctl::TheWatchEnd().Finish(128 + signal_number);
        continue;
      }
      std::_Exit(128 + signal_number);
    }
  }).detach();
  return polyplug::ctl::Main(argc, argv);
}
