// inprocess_recorder --root DIR --state-dir DIR --out FILE
//
// The in-process half of the callback-equivalence scenario (equivalence_scenario.h), for
// the Python client's tests: exactly what callback_equivalence_test runs in process
// (RecordInProcess: PrepareRoot(DIR), a core::Runtime with its state in the state dir and a
// phase callback, DiscoverAndLoad, RunScenario). A Python test then prepares the same root
// again, starts polyplug-host on it with the same --state-dir and replays the steps through
// its client; the phase messages name files under both directories, so the paths must be
// the same for the two runs to agree.
//
// FILE gets one JSON object per phase event, one per line, in the order the callback saw
// them (UTF-8; no other output goes there):
//   {"seq": 1, "phase": "LOADED", "bundle_id": "1234...", "bundle_name": "chain_a",
//    "bundle_version": "1.0.0", "reload_id": "7", "parent_reload_id": "0",
//    "root_reload_id": "7", "reason": "UNSPECIFIED", "message": "",
//    "registry_revision": 3, "live_instances": 0, "artifact_sha256": ""}
// - The ids (bundle_id, reload_id, parent_reload_id, root_reload_id) are 64-bit: bundle ids
//   are FNV-1a hashes above 2^53, beyond what a JSON reader that uses doubles keeps
//   exactly. They are written as decimal strings; parse them with int().
// - seq, registry_revision and live_instances are counters, written as JSON numbers.
// - phase is "PREPARING", "RELOADED", "FAILED", "UNLOADING" or "LOADED".
// - reason is host.proto's FailureReason without its "FAILURE_REASON_" prefix, as the host
//   puts it on the wire (wire::ReasonToken): "ARTIFACT_NOT_LOADABLE", and "UNSPECIFIED" on
//   every event that is not a failure.
// - bundle_version is "MAJOR.MINOR.PATCH"; artifact_sha256 is lowercase hex, or "" when
//   the runtime did not hash the artifact (as the host by default).
// The host epoch and timestamps are left out: they differ between any two runs.
//
// Exit status: 0 when every step did what the scenario expects; 1 otherwise (what went
// wrong on stderr; FILE is then not written); 2 on a usage error.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "client/equivalence_scenario.h"
#include "gtest/gtest.h"
#include "polyplug/core/phase_event.h"
#include "polyplug/host/v1/host.pb.h"
#include "wire/wire.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::polyplug::core::PhaseEvent;

constexpr char kUsage[] = "usage: inprocess_recorder --root DIR --state-dir DIR --out FILE\n";

// Length of the UTF-8 sequence starting at text[i], or 0 when it is not valid UTF-8.
size_t Utf8SequenceLength(absl::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  size_t length = 0;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  }
  // Overlong forms, UTF-16 surrogates and code points above U+10FFFF.
  if (lead == 0xe0 && byte(i + 1) < 0xa0) return 0;
  if (lead == 0xed && byte(i + 1) > 0x9f) return 0;
  if (lead == 0xf0 && byte(i + 1) < 0x90) return 0;
  if (lead == 0xf4 && byte(i + 1) > 0x8f) return 0;
  return length;
}

// `text` as a JSON string literal. Bytes that are not valid UTF-8 become U+FFFD.
std::string JsonString(absl::string_view text) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else if (const size_t n = Utf8SequenceLength(text, i); n > 0) {
      out.append(text.data() + i, n);
      i += n;
    } else {
      out += "\\ufffd";
      ++i;
    }
  }
  out += '"';
  return out;
}

// A 64-bit id as a JSON string of its decimal value.
std::string JsonId(uint64_t id) { return absl::StrCat("\"", id, "\""); }

std::string ToJsonLine(const PhaseEvent& e) {
  // The reason as the host sends it: core and host.proto share the numbering.
  const std::string reason =
      ::polyplug::wire::ReasonToken(static_cast<v1::FailureReason>(static_cast<int>(e.reason)));
  return absl::StrCat(
      "{\"seq\": ", e.seq, ", \"phase\": ", JsonString(::polyplug::core::PhaseName(e.phase)),
      ", \"bundle_id\": ", JsonId(e.bundle_id), ", \"bundle_name\": ", JsonString(e.bundle_name),
      ", \"bundle_version\": ", JsonString(e.bundle_version.ToString()),
      ", \"reload_id\": ", JsonId(e.reload_id),
      ", \"parent_reload_id\": ", JsonId(e.parent_reload_id),
      ", \"root_reload_id\": ", JsonId(e.root_reload_id), ", \"reason\": ", JsonString(reason),
      ", \"message\": ", JsonString(e.message), ", \"registry_revision\": ", e.registry_revision,
      ", \"live_instances\": ", e.live_instances,
      ", \"artifact_sha256\": ", JsonString(e.artifact_sha256), "}\n");
}

// Parses "--flag VALUE" and "--flag=VALUE" for the three flags; false on anything else.
bool ParseArgs(int argc, char** argv, fs::path* root, fs::path* state_dir, fs::path* out) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    std::string value;
    absl::string_view name = arg;
    if (const size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = arg.substr(0, eq);
      value = std::string(arg.substr(eq + 1));
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return false;
    }
    if (name == "--root") {
      *root = value;
    } else if (name == "--state-dir") {
      *state_dir = value;
    } else if (name == "--out") {
      *out = value;
    } else {
      return false;
    }
  }
  return !root->empty() && !state_dir->empty() && !out->empty();
}

}  // namespace

int main(int argc, char** argv) {
  fs::path root, state_dir, out;
  if (!ParseArgs(argc, argv, &root, &state_dir, &out)) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  bool failed = false;
  const std::vector<PhaseEvent> events =
      ::polyplug::test::RecordInProcess(root, state_dir, [&](const std::string& what) {
        std::fprintf(stderr, "inprocess_recorder: %s\n", what.c_str());
        failed = true;
      });
  // The bundle helpers (copies, overwrites) report what goes wrong as GoogleTest failures,
  // which land in the ad hoc result outside a test.
  if (::testing::UnitTest::GetInstance()->ad_hoc_test_result().Failed()) {
    std::fprintf(stderr, "inprocess_recorder: preparing the bundle files failed (see above)\n");
    failed = true;
  }
  if (events.empty()) {
    std::fprintf(stderr, "inprocess_recorder: the scenario recorded no event\n");
    failed = true;
  }
  if (failed) return 1;

  std::string text;
  for (const PhaseEvent& e : events) text += ToJsonLine(e);
  std::ofstream file(out, std::ios::binary | std::ios::trunc);
  file << text;
  file.close();
  if (!file) {
    std::fprintf(stderr, "inprocess_recorder: cannot write %s\n", out.c_str());
    return 1;
  }
  std::fprintf(stderr, "inprocess_recorder: %zu events written to %s\n", events.size(),
               out.c_str());
  return 0;
}
