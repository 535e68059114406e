#include "support/bundle_fixture.h"

#include <openssl/evp.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace polyplug::test {

namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "polyplug-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp(" << pattern << "): " << std::strerror(errno);
  }
  // Canonical, so that paths the runtime reports compare equal to ours.
  path_ = fs::weakly_canonical(pattern);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

fs::path TestBundleDir(absl::string_view target) {
  return fs::path(POLYPLUG_TEST_BUNDLES_DIR) / std::string(target);
}

namespace {

bool IsBundleFile(const fs::directory_entry& entry) {
  const fs::path name = entry.path().filename();
  return entry.is_regular_file() && (name == "manifest.toml" || name.extension() == ".so");
}

}  // namespace

fs::path CopyBundle(const fs::path& src, const fs::path& dst_dir) {
  EXPECT_TRUE(fs::exists(src / "manifest.toml")) << src << " is not a built bundle";
  EXPECT_FALSE(fs::exists(dst_dir)) << dst_dir << " already exists";
  fs::create_directories(dst_dir);
  for (const fs::directory_entry& entry : fs::directory_iterator(src)) {
    if (IsBundleFile(entry)) fs::copy_file(entry.path(), dst_dir / entry.path().filename());
  }
  return dst_dir;
}

fs::path CopyTestBundle(absl::string_view target, const fs::path& parent) {
  return CopyBundle(TestBundleDir(target), parent / std::string(target));
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFile(const fs::path& path, absl::string_view contents) {
  // Truncating an existing file keeps its inode, like a rebuild writing in place.
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  EXPECT_TRUE(out.good()) << "cannot write " << path;
}

bool ReplaceInFile(const fs::path& path, absl::string_view from, absl::string_view to) {
  if (!fs::exists(path)) {
    ADD_FAILURE() << path << " does not exist";
    return false;
  }
  const std::string text = ReadFile(path);
  if (!absl::StrContains(text, from)) {
    ADD_FAILURE() << path << " does not contain \"" << from << "\"; it holds:\n" << text;
    return false;
  }
  WriteFile(path, absl::StrReplaceAll(text, {{from, to}}));
  return true;
}

void OverwriteArtifact(const fs::path& src_bundle, const fs::path& dst_bundle) {
  for (const fs::directory_entry& entry : fs::directory_iterator(src_bundle)) {
    if (IsBundleFile(entry)) {
      // copy_file with overwrite_existing truncates and rewrites the destination in place.
      fs::copy_file(entry.path(), dst_bundle / entry.path().filename(),
                    fs::copy_options::overwrite_existing);
    }
  }
}

std::string Sha256OfFile(const fs::path& path) {
  const std::string bytes = ReadFile(path);
  unsigned char sha[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (bytes.empty() ||
      EVP_Digest(bytes.data(), bytes.size(), sha, &size, EVP_sha256(), nullptr) != 1) {
    return "";
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(sha), size));
}

size_t CountFilesUnder(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return 0;
  size_t count = 0;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir, ec)) {
    if (!entry.is_directory()) ++count;
  }
  return count;
}

bool ContainsIgnoreCase(absl::string_view haystack, absl::string_view needle) {
  return absl::StrContains(absl::AsciiStrToLower(haystack), absl::AsciiStrToLower(needle));
}

std::string NodeContract(absl::string_view name) { return absl::StrCat("node.", name, "@1"); }

fs::path WriteGraphNode(const fs::path& parent, const GraphNode& node) {
  const fs::path dir = parent / node.name;
  fs::create_directories(dir);
  if (!fs::exists(dir / "libgraph_node.so")) {
    fs::copy_file(TestBundleDir("graph_node") / "libgraph_node.so", dir / "libgraph_node.so");
  }
  const std::vector<std::string> provides =
      node.provides.empty() ? std::vector<std::string>{NodeContract(node.name)} : node.provides;
  std::string manifest =
      absl::StrCat("loader = \"native\"\nname = \"", node.name,
                   "\"\nid = ", DecimalId(core::BundleId(node.name)), "\nversion = \"",
                   node.version, "\"\nfile = \"libgraph_node.so\"\nneeds_reinit_on_dep_reload = ",
                   node.needs_reinit_on_dep_reload ? "true" : "false", "\nprovides = [");
  for (size_t i = 0; i < provides.size(); ++i) {
    absl::StrAppend(&manifest, i == 0 ? "" : ", ", "\"", provides[i], "\"");
  }
  absl::StrAppend(&manifest, "]\n");
  for (const std::string& contract : node.depends) {
    absl::StrAppend(&manifest, "\n[[dependency]]\nkind = \"contract\"\ncontract = \"", contract,
                    "\"\nmin_version = \"", contract.substr(contract.find('@') + 1), ".0\"\n");
  }
  WriteFile(dir / "manifest.toml", manifest);
  return dir;
}

std::string DecimalId(uint64_t id) { return std::to_string(id); }

std::string HexId(uint64_t id) { return absl::StrCat("0x", absl::Hex(id)); }

EventRecorder::EventRecorder(core::Runtime& runtime) : runtime_(runtime) {
  id_ = runtime_.AddPhaseCallback(
      [this](const PolyplugReloadPhase& phase, const core::PhaseEvent& event) {
        RecordedPhase recorded;
        recorded.event = event;
        recorded.abi_phase_type = phase.phase_type;
        recorded.abi_bundle_id = phase.bundle_id;
        recorded.abi_bundle_name.assign(
            phase.bundle_name.ptr == nullptr ? "" : phase.bundle_name.ptr, phase.bundle_name.len);
        if (phase.reason.ptr != nullptr) {
          recorded.abi_reason.emplace(phase.reason.ptr, phase.reason.len);
        }
        std::lock_guard<std::mutex> lock(mu_);
        recorded_.push_back(std::move(recorded));
      });
}

EventRecorder::~EventRecorder() { runtime_.RemovePhaseCallback(id_); }

std::vector<core::PhaseEvent> EventRecorder::events() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<core::PhaseEvent> events;
  events.reserve(recorded_.size());
  for (const RecordedPhase& r : recorded_) events.push_back(r.event);
  return events;
}

std::vector<RecordedPhase> EventRecorder::recorded() const {
  std::lock_guard<std::mutex> lock(mu_);
  return recorded_;
}

size_t EventRecorder::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return recorded_.size();
}

void EventRecorder::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  recorded_.clear();
}

std::vector<core::PhaseEvent> EventRecorder::Take() {
  std::vector<core::PhaseEvent> taken = events();
  std::lock_guard<std::mutex> lock(mu_);
  recorded_.erase(recorded_.begin(), recorded_.begin() + static_cast<ptrdiff_t>(taken.size()));
  return taken;
}

std::string Describe(const core::PhaseEvent& event) {
  return absl::StrCat(core::PhaseName(event.phase), " ", event.bundle_name);
}

std::vector<std::string> Describe(const std::vector<core::PhaseEvent>& events) {
  std::vector<std::string> out;
  out.reserve(events.size());
  for (const core::PhaseEvent& e : events) out.push_back(Describe(e));
  return out;
}

void PrintTo(const LogLine& line, std::ostream* os) {
  *os << "[" << static_cast<int>(line.level) << "] [" << line.scope << "] " << line.message;
}

core::LogSink LogRecorder::Sink() {
  return [this](core::LogLevel level, absl::string_view scope, absl::string_view message) {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.push_back({level, std::string(scope), std::string(message)});
  };
}

std::vector<LogLine> LogRecorder::lines() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lines_;
}

std::vector<LogLine> LogRecorder::Matching(core::LogLevel level, absl::string_view needle) const {
  std::vector<LogLine> out;
  for (const LogLine& line : lines()) {
    if (line.level == level &&
        (ContainsIgnoreCase(line.message, needle) || ContainsIgnoreCase(line.scope, needle))) {
      out.push_back(line);
    }
  }
  return out;
}

std::vector<LogLine> LogRecorder::Warnings() const {
  std::vector<LogLine> out;
  for (const LogLine& line : lines()) {
    if (line.level == core::LogLevel::kWarn || line.level == core::LogLevel::kError) {
      out.push_back(line);
    }
  }
  return out;
}

void LogRecorder::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  lines_.clear();
}

std::string ToString(const std::vector<LogLine>& lines) {
  std::string out;
  for (const LogLine& line : lines) {
    absl::StrAppend(&out, "  [", static_cast<int>(line.level), "] [", line.scope, "] ",
                    line.message, "\n");
  }
  return out.empty() ? "  (no lines)\n" : out;
}

absl::StatusOr<int32_t> CallFn0(const core::Runtime& runtime, core::ContractHandle handle) {
  // The pin keeps the interface and the code behind it alive until the call returns.
  core::ReadPin pin = runtime.Pin();
  absl::StatusOr<const PolyplugGuestContractInterface*> iface = runtime.Resolve(handle);
  if (!iface.ok()) return iface.status();
  if ((*iface)->function_count < 1 || (*iface)->functions == nullptr ||
      (*iface)->functions[0] == nullptr) {
    return absl::FailedPreconditionError("the provider has no function 0");
  }
  int32_t out = -1;
  PolyplugAbiError err{POLYPLUG_ABI_OK, {nullptr, 0}};
  PolyplugGuestContractInstance instance{nullptr, (*iface)->contract_id};
  (*iface)->functions[0](instance, nullptr, &out, &err);
  if (err.code != POLYPLUG_ABI_OK) {
    return absl::InternalError(absl::StrCat(
        "fn0 failed with code ", err.code, ": ",
        absl::string_view(err.message.ptr == nullptr ? "" : err.message.ptr, err.message.len)));
  }
  return out;
}

absl::StatusOr<int32_t> CallFn0(const core::Runtime& runtime, uint64_t contract_id,
                                uint32_t min_major) {
  absl::StatusOr<core::ContractHandle> handle = runtime.Find(contract_id, min_major);
  if (!handle.ok()) return handle.status();
  return CallFn0(runtime, *handle);
}

absl::StatusOr<int32_t> CallFn0(const core::Runtime& runtime, absl::string_view contract_name,
                                uint32_t major) {
  return CallFn0(runtime, core::GuestContractId(contract_name, major), major);
}

void RuntimeTest::SetUp() { CreateRuntime(); }

void RuntimeTest::TearDown() { DestroyRuntime(); }

void RuntimeTest::CreateRuntime(bool hot_reload_enabled,
                                decltype(core::RuntimeOptions::admit_artifact) admit) {
  core::RuntimeOptions options;
  options.hot_reload_enabled = hot_reload_enabled;
  options.admit_artifact = std::move(admit);
  options.max_log_level = core::LogLevel::kWarn;
  CreateRuntimeWith(std::move(options));
}

void RuntimeTest::CreateRuntimeWith(core::RuntimeOptions options) {
  DestroyRuntime();
  if (options.state_dir.empty()) options.state_dir = state_.path();
  if (!options.log_sink) options.log_sink = log_.Sink();
  absl::StatusOr<std::unique_ptr<core::Runtime>> created = core::Runtime::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  runtime_ = std::move(*created);
  events_ = std::make_unique<EventRecorder>(*runtime_);
}

void RuntimeTest::DestroyRuntime() {
  // The recorder unregisters from the runtime, so it goes first.
  events_.reset();
  runtime_.reset();
}

fs::path RuntimeTest::CopyAndLoad(absl::string_view target) {
  fs::path dir = Copy(target);
  absl::StatusOr<core::BundleInfo> loaded = runtime_->LoadBundle(dir);
  [&] { ASSERT_TRUE(loaded.ok()) << "loading " << target << ": " << loaded.status(); }();
  return dir;
}

}  // namespace polyplug::test
