// polyplugctl id NAME|CONTRACT@MAJOR...: bundle and guest contract ids, without a host.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "polyplug/identity.hpp"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

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

int RunOffline(const Invocation& ctx) {
  std::vector<IdOperand> ids;
  for (const std::string& operand : ctx.args.operands()) {
    auto parsed = ParseIdOperand(operand);
    if (!parsed.ok()) return Misuse(ctx, absl::StrCat("id: ", parsed.status().message()));
    ids.push_back(*std::move(parsed));
  }
  std::vector<std::vector<std::string>> rows;
  for (const IdOperand& id : ids) {
    const std::string canonical = id.major ? absl::StrCat(id.name, "@", *id.major) : id.name;
    if (ctx.out.json()) {
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
      ctx.out.Json("polyplugctl.Id", root);
    } else {
      rows.push_back({canonical, id.major ? "contract" : "bundle", absl::StrCat(id.id), IdHex(id)});
    }
  }
  if (!ctx.out.json()) PrintTable(ctx.out, rows, /*header=*/false);
  return kExitOk;
}

}  // namespace

const Command& IdCommand() {
  static constexpr Command kCommand = {
      .name = "id",
      .help =
          "usage: polyplugctl id NAME|CONTRACT@MAJOR...\n"
          "\n"
          "Prints the id of each operand, one line each: for a bundle NAME its bundle id\n"
          "(FNV-1a 64 of the name), for CONTRACT@MAJOR (an operand with '@') its guest\n"
          "contract id (FNV-1a 64 of \"guest_contract:CONTRACT@MAJOR\", MAJOR in decimal). Each\n"
          "line is the name, the kind, the id in decimal (as manifest.toml writes it) and\n"
          "in hex (as the host's errors print it). --json: one object per operand, the id\n"
          "as a string. Needs no host: it connects to nothing. Exit code 2 for an empty\n"
          "operand or a MAJOR that is not a decimal number.\n",
      .min_operands = 1,
      .max_operands = std::numeric_limits<size_t>::max(),
      .run_offline = RunOffline,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
