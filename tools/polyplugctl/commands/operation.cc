// polyplugctl operation ID [--wait]: the outcome of the reload, load, unload or push that
// carried request id ID, as the host remembers it (GetOperation).
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/operations.h"
#include "polyplugctl/commands/support.h"
#include "wire/wire.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;

constexpr FlagSpec kFlags[] = {{.name = "wait"}};

// Whether a done operation succeeded, as its own command's exit code says.
bool OperationSucceeded(const v1::Operation& op) {
  if (op.code() != 0) return false;
  switch (op.response_case()) {
    case v1::Operation::kReload:
      return Succeeded(op.reload());
    case v1::Operation::kPush:
      return Succeeded(op.push());
    case v1::Operation::kLoad:
      return Succeeded(op.load());
    case v1::Operation::kUnload:
      return Succeeded(op.unload());
    case v1::Operation::RESPONSE_NOT_SET:
      break;
  }
  return false;
}

int Run(Context& ctx) {
  const std::string& id = ctx.args.operands()[0];
  const std::string what = absl::StrCat("operation ", id);
  const bool wait = ctx.args.Has("wait");
  auto op = ctx.client.GetOperation(id, wait, ctx.call);
  if (!op.ok() && wait && absl::IsDeadlineExceeded(op.status()) &&
      client::FailureReasonOf(op.status()) == v1::FAILURE_REASON_UNSPECIFIED) {
    // The wait ended: one quick look tells a running operation from a silent host.
    client::CallOptions look = ctx.call;
    look.timeout = absl::Seconds(5);
    op = ctx.client.GetOperation(id, /*wait=*/false, look);
  }
  if (!op.ok()) return Failed(ctx, what, op.status());
  if (ctx.out.json()) ctx.out.Json(*op);
  if (!op->done()) {
    const std::string message = absl::StrCat(
        "the ", op->method(), " with request id ", id, " is still running (since ",
        absl::FormatTime(absl::RFC3339_sec, wire::FromProto(op->started()), absl::UTCTimeZone()),
        ")", wait ? " after --timeout" : "; --wait waits for it");
    if (ctx.out.json()) {
      ctx.out.Note(message);
    } else {
      ctx.out.Line(absl::StrCat(ctx.out.Paint("RUNNING", Color::kYellow), "  ", op->method(),
                                ", request id ", id));
      ctx.out.Note(message);
    }
    return kExitTimeout;
  }
  if (!ctx.out.json()) {
    ctx.out.Line(ctx.out.Paint(absl::StrCat(op->method(), ", request id ", id, ", done in ",
                                            absl::FormatDuration(wire::FromProto(op->finished()) -
                                                                 wire::FromProto(op->started())),
                                            " (host epoch ", op->host_epoch(), ")"),
                               Color::kDim));
    if (absl::Status status = OperationStatus(*op); !status.ok()) {
      ctx.out.Line(absl::StrCat(ctx.out.PhaseWord(v1::PHASE_FAILED), " ",
                                absl::StatusCodeToString(status.code()), ": ", status.message()));
    }
    switch (op->response_case()) {
      case v1::Operation::kReload:
        PrintHuman(ctx.out, op->reload());
        break;
      case v1::Operation::kLoad:
        PrintHuman(ctx.out, op->load());
        break;
      case v1::Operation::kUnload:
        PrintHuman(ctx.out, op->unload());
        break;
      case v1::Operation::kPush:
        PrintHuman(ctx.out, op->push());
        break;
      case v1::Operation::RESPONSE_NOT_SET:
        break;
    }
  }
  return OperationSucceeded(*op) ? kExitOk : kExitFailed;
}

}  // namespace

const Command& OperationCommand() {
  static constexpr Command kCommand = {
      .name = "operation",
      .help =
          "usage: polyplugctl operation ID [--wait]\n"
          "\n"
          "The outcome of the reload, load, unload or push that carried request id ID\n"
          "(--request-id, or the id polyplugctl printed), as the host remembers it: the\n"
          "last 1024 operations of the running host (a restarted host remembers none).\n"
          "--wait: wait for an operation still running to end (at most --timeout).\n"
          "--json prints the polyplug.host.v1.Operation, the outcome in it.\n"
          "\n"
          "Exit code 0 when it is done and succeeded (as its command's exit code 0 says:\n"
          "a reload RELOADED with every dependent, a push LOADED or RELOADED, a load or\n"
          "unload done); 1 when it is done and failed, or the host does not know ID\n"
          "(OPERATION_NOT_FOUND); 4 when it is still running (after --wait's --timeout).\n",
      .flags = kFlags,
      .min_operands = 1,
      .max_operands = 1,
      .run = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
