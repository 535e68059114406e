#include "polyplug/core/manifest.h"

#include <charconv>
#include <fstream>
#include <sstream>
#include <system_error>

#include <toml++/toml.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::core {
namespace {

namespace fs = std::filesystem;

// toml++ stores integers as int64, but real ids exceed INT64_MAX. Before parsing, a bare
// decimal value above INT64_MAX (key = 16808897324254478442) is rewritten into a string
// carrying this prefix, which only the u64 field readers accept. Line numbers are kept.
constexpr absl::string_view kU64Prefix = "polyplug-u64:";

bool ExceedsInt64(absl::string_view digits) {
  constexpr absl::string_view kInt64Max = "9223372036854775807";
  while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
  if (digits.size() != kInt64Max.size()) return digits.size() > kInt64Max.size();
  return digits > kInt64Max;
}

std::string QuoteLargeIntegers(absl::string_view text) {
  std::string out;
  out.reserve(text.size() + 32);
  size_t i = 0;
  const size_t n = text.size();
  bool after_equals = false;  // the previous significant character was '='
  while (i < n) {
    char c = text[i];
    if (c == '#') {  // comment: copy to end of line
      size_t end = text.find('\n', i);
      if (end == absl::string_view::npos) end = n;
      out.append(text.data() + i, end - i);
      i = end;
      continue;
    }
    if (c == '"' || c == '\'') {  // strings, single or multi-line
      const std::string triple(3, c);
      bool multi = text.substr(i, 3) == triple;
      size_t start = i;
      i += multi ? 3 : 1;
      while (i < n) {
        if (c == '"' && text[i] == '\\') {
          i += 2;
          continue;
        }
        if (multi ? text.substr(i, 3) == triple : text[i] == c) {
          i += multi ? 3 : 1;
          // A multi-line string may end with up to two extra quote characters.
          while (multi && i < n && text[i] == c) ++i;
          break;
        }
        if (!multi && text[i] == '\n') break;  // unterminated: let the parser report it
        ++i;
      }
      out.append(text.data() + start, std::min(i, n) - start);
      after_equals = false;
      continue;
    }
    if (after_equals && c >= '0' && c <= '9') {
      size_t end = i;
      while (end < n && text[end] >= '0' && text[end] <= '9') ++end;
      size_t look = end;
      while (look < n && (text[look] == ' ' || text[look] == '\t' || text[look] == '\r')) ++look;
      bool value_ends = look == n || text[look] == '\n' || text[look] == '#' || text[look] == ',' ||
                        text[look] == '}';
      absl::string_view digits = text.substr(i, end - i);
      if (value_ends && ExceedsInt64(digits)) {
        absl::StrAppend(&out, "\"", kU64Prefix, digits, "\"");
      } else {
        out.append(digits.data(), digits.size());
      }
      i = end;
      after_equals = false;
      continue;
    }
    if (c == '=') {
      after_equals = true;
    } else if (c != ' ' && c != '\t') {
      after_equals = false;
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

std::string Where(const fs::path& path, absl::string_view field) {
  return absl::StrCat(path.string(), ": field '", field, "'");
}

absl::Status FieldError(const fs::path& path, absl::string_view field, absl::string_view what) {
  return MakeError(ErrorReason::kManifestInvalid, absl::StrCat(Where(path, field), ": ", what));
}

absl::string_view TypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    default:
      return "a date or time";
  }
}

absl::StatusOr<std::string> ReadString(const toml::node* node, const fs::path& path,
                                       absl::string_view field) {
  if (node == nullptr) return std::string();
  if (const auto* s = node->as_string()) {
    if (absl::StartsWith(s->get(), kU64Prefix)) {
      return FieldError(path, field, "must be a string, found an integer");
    }
    return s->get();
  }
  return FieldError(path, field, absl::StrCat("must be a string, found ", TypeName(*node)));
}

absl::StatusOr<uint64_t> ReadU64(const toml::node* node, const fs::path& path,
                                 absl::string_view field) {
  if (node == nullptr) return uint64_t{0};
  if (const auto* i = node->as_integer()) {
    if (i->get() < 0) {
      return FieldError(path, field,
                        absl::StrCat("must be an unsigned 64-bit integer, found ", i->get()));
    }
    return static_cast<uint64_t>(i->get());
  }
  if (const auto* s = node->as_string(); s && absl::StartsWith(s->get(), kU64Prefix)) {
    absl::string_view digits = absl::string_view(s->get()).substr(kU64Prefix.size());
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (ec != std::errc() || end != digits.data() + digits.size()) {
      return FieldError(path, field,
                        absl::StrCat("value ", digits, " does not fit an unsigned 64-bit integer"));
    }
    return value;
  }
  return FieldError(path, field,
                    absl::StrCat("must be an unsigned 64-bit integer, found ", TypeName(*node)));
}

absl::StatusOr<std::vector<std::string>> ReadStringArray(const toml::node* node,
                                                         const fs::path& path,
                                                         absl::string_view field) {
  std::vector<std::string> out;
  if (node == nullptr) return out;
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    return FieldError(path, field,
                      absl::StrCat("must be an array of strings, found ", TypeName(*node)));
  }
  for (size_t i = 0; i < array->size(); ++i) {
    auto value = ReadString(array->get(i), path, absl::StrCat(field, "[", i, "]"));
    if (!value.ok()) return value.status();
    out.push_back(*std::move(value));
  }
  return out;
}

// Entries that break the grammar are left out and the first such error is kept in
// *grammar_error for ValidateManifest (rule 6 comes after the identity rules).
absl::StatusOr<std::vector<ContractRef>> ReadRefs(const toml::node* node, const fs::path& path,
                                                  absl::string_view field,
                                                  absl::Status* grammar_error) {
  auto strings = ReadStringArray(node, path, field);
  if (!strings.ok()) return strings.status();
  std::vector<ContractRef> refs;
  for (size_t i = 0; i < strings->size(); ++i) {
    auto ref = ParseContractRef((*strings)[i]);
    if (!ref.ok()) {
      if (grammar_error->ok()) {
        *grammar_error = FieldError(
            path, absl::StrCat(field, "[", i, "]"),
            absl::StrCat("must be \"name\" or \"name@version\": ", ref.status().message()));
      }
      continue;
    }
    refs.push_back(*std::move(ref));
  }
  return refs;
}

absl::StatusOr<std::string> ReadFile(const toml::node* node, const fs::path& path) {
  if (node == nullptr) return std::string();
  if (node->is_string()) return ReadString(node, path, "file");
  const toml::table* table = node->as_table();
  if (table == nullptr) {
    return FieldError(
        path, "file",
        absl::StrCat("must be a string or a per-platform table, found ", TypeName(*node)));
  }
  std::vector<std::string> available;
  std::string chosen;
  bool found = false;
  for (const auto& [os, os_node] : *table) {
    const toml::table* archs = os_node.as_table();
    if (archs == nullptr) continue;  // non-table siblings scoped under [file] are skipped
    for (const auto& [arch, arch_node] : *archs) {
      std::string platform = absl::StrCat(std::string(os.str()), ".", std::string(arch.str()));
      if (!arch_node.is_string()) continue;
      available.push_back(platform);
      if (platform == HostPlatform()) {
        auto value = ReadString(&arch_node, path, absl::StrCat("file.", platform));
        if (!value.ok()) return value.status();
        chosen = *value;
        found = true;
      }
    }
  }
  if (!found) {
    return FieldError(path, "file",
                      absl::StrCat("no file entry for platform ", HostPlatform(), ", available: ",
                                   available.empty() ? "none" : absl::StrJoin(available, ", ")));
  }
  return chosen;
}

uint32_t MajorOf(absl::string_view version) {
  uint32_t major = 0;
  size_t dot = version.find('.');
  absl::string_view first = version.substr(0, dot);
  auto [end, ec] = std::from_chars(first.data(), first.data() + first.size(), major);
  if (ec != std::errc() || end != first.data() + first.size()) return 0;
  return major;
}

absl::string_view BareName(absl::string_view contract) {
  return contract.substr(0, contract.find('@'));
}

}  // namespace

absl::string_view HostPlatform() {
#if defined(__linux__)
#define POLYPLUG_OS "linux"
#elif defined(__APPLE__)
#define POLYPLUG_OS "macos"
#else
#define POLYPLUG_OS "windows"
#endif
#if defined(__x86_64__)
  return POLYPLUG_OS ".x86_64";
#elif defined(__aarch64__)
  return POLYPLUG_OS ".aarch64";
#else
  return POLYPLUG_OS ".unknown";
#endif
#undef POLYPLUG_OS
}

uint64_t ManifestDependency::DeclaredContractId() const {
  if (contract_id != 0) return contract_id;
  absl::string_view bare = BareName(contract);
  uint32_t major = 0;
  if (!min_version.empty()) {
    major = MajorOf(min_version);
  } else if (size_t at = contract.find('@'); at != std::string::npos) {
    major = MajorOf(absl::string_view(contract).substr(at + 1));
  }
  return GuestContractId(bare, major);
}

std::vector<uint64_t> Manifest::DeclaredContractIds() const {
  std::vector<uint64_t> ids;
  for (const ManifestDependency& dep : dependencies) {
    if (dep.contract.empty() && dep.contract_id == 0) continue;
    ids.push_back(dep.DeclaredContractId());
  }
  return ids;
}

absl::StatusOr<Manifest> ParseManifest(absl::string_view text, const fs::path& path) {
  if (text.size() > kMaxManifestBytes) {
    return MakeError(ErrorReason::kManifestInvalid,
                     absl::StrCat(path.string(), ": manifest is ", text.size(),
                                  " bytes, more than the limit of ", kMaxManifestBytes));
  }
  std::string rewritten = QuoteLargeIntegers(text);
  toml::table root;
  try {
    root = toml::parse(rewritten, path.string());
  } catch (const toml::parse_error& e) {
    return MakeError(
        ErrorReason::kManifestInvalid,
        absl::StrCat(path.string(), ":", e.source().begin.line, ":", e.source().begin.column,
                     ": invalid TOML: ", std::string(e.description())));
  }

  Manifest m;
  m.path = path;
  m.dir = path.parent_path();
#define POLYPLUG_ASSIGN(lhs, expr)            \
  do {                                        \
    auto value_ = (expr);                     \
    if (!value_.ok()) return value_.status(); \
    lhs = *std::move(value_);                 \
  } while (0)
  POLYPLUG_ASSIGN(m.loader, ReadString(root.get("loader"), path, "loader"));
  POLYPLUG_ASSIGN(m.name, ReadString(root.get("name"), path, "name"));
  POLYPLUG_ASSIGN(m.id, ReadU64(root.get("id"), path, "id"));
  POLYPLUG_ASSIGN(m.version_text, ReadString(root.get("version"), path, "version"));
  if (auto v = ParseVersion(m.version_text); v.ok()) m.version = *v;
  POLYPLUG_ASSIGN(m.file, ReadFile(root.get("file"), path));
  POLYPLUG_ASSIGN(m.provides, ReadRefs(root.get("provides"), path, "provides", &m.reference_error));
  POLYPLUG_ASSIGN(m.bundle_dependencies, ReadRefs(root.get("bundle_dependencies"), path,
                                                  "bundle_dependencies", &m.reference_error));
  if (const toml::node* reinit = root.get("needs_reinit_on_dep_reload")) {
    if (!reinit->is_boolean()) {
      return FieldError(path, "needs_reinit_on_dep_reload",
                        absl::StrCat("must be a boolean, found ", TypeName(*reinit)));
    }
    m.needs_reinit_on_dep_reload = reinit->as_boolean()->get();
  }
  if (const toml::node* counts = root.get("function_count")) {
    const toml::table* table = counts->as_table();
    if (table == nullptr) {
      return FieldError(
          path, "function_count",
          absl::StrCat("must be a table of \"contract@major\" = count, found ", TypeName(*counts)));
    }
    for (const auto& [key, value] : *table) {
      std::string field = absl::StrCat("function_count.\"", std::string(key.str()), "\"");
      const auto* count = value.as_integer();
      if (count == nullptr || count->get() < 0 || count->get() > UINT32_MAX) {
        return FieldError(path, field, "must be an integer between 0 and 4294967295");
      }
      m.function_count[std::string(key.str())] = static_cast<uint32_t>(count->get());
    }
  }
  if (const toml::node* deps = root.get("dependency")) {
    const toml::array* array = deps->as_array();
    if (array == nullptr || !array->is_array_of_tables()) {
      return FieldError(path, "dependency", "must be an array of tables ([[dependency]])");
    }
    for (size_t i = 0; i < array->size(); ++i) {
      const toml::table& t = *array->get(i)->as_table();
      std::string f = absl::StrCat("dependency[", i, "].");
      ManifestDependency d;
      POLYPLUG_ASSIGN(d.kind, ReadString(t.get("kind"), path, f + "kind"));
      POLYPLUG_ASSIGN(d.contract, ReadString(t.get("contract"), path, f + "contract"));
      POLYPLUG_ASSIGN(d.min_version, ReadString(t.get("min_version"), path, f + "min_version"));
      if (t.contains("bundle")) {
        std::string bundle;
        POLYPLUG_ASSIGN(bundle, ReadString(t.get("bundle"), path, f + "bundle"));
        d.bundle = bundle;
      }
      POLYPLUG_ASSIGN(d.contract_id, ReadU64(t.get("contract_id"), path, f + "contract_id"));
      if (t.contains("bundle_id")) {
        uint64_t bundle_id = 0;
        POLYPLUG_ASSIGN(bundle_id, ReadU64(t.get("bundle_id"), path, f + "bundle_id"));
        d.bundle_id = bundle_id;
      }
      m.dependencies.push_back(std::move(d));
    }
  }
#undef POLYPLUG_ASSIGN
  return m;
}

absl::Status ValidateManifest(const Manifest& m) {
  const fs::path& path = m.path;
  if (m.loader.empty()) {
    return FieldError(path, "loader", "is required (e.g. loader = \"native\")");
  }
  if (m.name.empty()) return FieldError(path, "name", "is required and must not be empty");
  if (m.file.find_first_not_of(" \t\r\n") == std::string::npos) {
    return FieldError(path, "file",
                      absl::StrCat("is required: bundle \"", m.name, "\" names no artifact"));
  }
  if (m.id == 0) return FieldError(path, "id", "is required but was 0 or missing");
  const uint64_t expected = BundleId(m.name);
  if (m.id != expected) {
    return MakeError(
        ErrorReason::kBundleTampered,
        absl::StrCat(Where(path, "id"), ": bundle \"", m.name, "\" is tampered: expected id ",
                     FormatBundleId(expected), " (", expected, ", FNV-1a 64 of the name), found ",
                     FormatBundleId(m.id), " (", m.id, ")"));
  }
  if (!m.reference_error.ok()) return m.reference_error;
  if (auto v = ParseVersion(m.version_text); !v.ok()) {
    return FieldError(path, "version", v.status().message());
  }
  for (size_t i = 0; i < m.dependencies.size(); ++i) {
    const ManifestDependency& d = m.dependencies[i];
    std::string f = absl::StrCat("dependency[", i, "]");
    if (d.contract.empty() && d.kind != "bundle") {
      return FieldError(path, f + ".contract", "is required for a contract dependency");
    }
    if (d.contract_id != 0) {
      uint64_t canonical = GuestContractId(BareName(d.contract), MajorOf(d.min_version));
      if (canonical != d.contract_id) {
        return FieldError(
            path, f + ".contract_id",
            absl::StrCat(d.contract_id, " is not the id of contract \"", BareName(d.contract), "@",
                         MajorOf(d.min_version), "\" (expected ", canonical, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Manifest> LoadManifest(const fs::path& bundle_path) {
  std::error_code ec;
  fs::path dir = fs::is_directory(bundle_path, ec) ? bundle_path : bundle_path.parent_path();
  dir = fs::absolute(dir, ec).lexically_normal();
  if (!dir.empty() && dir.filename().empty()) dir = dir.parent_path();  // drop trailing '/'
  fs::path path = dir / "manifest.toml";
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return MakeError(
        ErrorReason::kManifestInvalid,
        absl::StrCat(path.string(), ": failed to read: ",
                     fs::exists(path, ec) ? "permission denied or not a file" : "no such file"));
  }
  auto size = fs::file_size(path, ec);
  if (!ec && size > kMaxManifestBytes) {
    return MakeError(ErrorReason::kManifestInvalid,
                     absl::StrCat(path.string(), ": manifest is ", size,
                                  " bytes, more than the limit of ", kMaxManifestBytes));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto manifest = ParseManifest(buffer.str(), path);
  if (!manifest.ok()) return manifest.status();
  manifest->dir = dir;
  if (absl::Status s = ValidateManifest(*manifest); !s.ok()) return s;
  manifest->version = *ParseVersion(manifest->version_text);
  return manifest;
}

}  // namespace polyplug::core
