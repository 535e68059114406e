// polyplug-mkmanifest: writes a bundle's manifest.toml with the id computed from its name.
//
// Used by polyplug_add_bundle at build time. The manifest it writes is validated with the
// same code the runtime uses, so a bundle that builds has a manifest that loads.
//
// Its flags, exit codes and output are documented in docs/WRITING_BUNDLES.md ("Writing it
// with polyplug-mkmanifest"): 0 written; 1 the manifest does not validate, a value is not
// UTF-8, or the file cannot be written; 2 a usage error.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <toml++/toml.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/manifest.h"

ABSL_FLAG(std::string, out, "", "The file to write; it is overwritten. Required.");
ABSL_FLAG(std::string, name, "", "The bundle's name; its id is FNV-1a 64 of it. Required.");
// Spelled --version on the command line: absl keeps --version for itself.
ABSL_FLAG(std::string, bundle_version, "0.1.0", "The bundle's version, X.Y.Z.");
ABSL_FLAG(std::string, file, "", "The library, relative to the bundle directory. Required.");
ABSL_FLAG(std::vector<std::string>, provides, {}, "A contract it provides, C@M. Repeatable.");
ABSL_FLAG(std::vector<std::string>, depends, {}, "A contract it uses, C@M. Repeatable.");
ABSL_FLAG(std::vector<std::string>, bundle_dependency, {},
          "A bundle it depends on, NAME. Repeatable.");
ABSL_FLAG(std::vector<std::string>, function_count, {},
          "The function count of a contract it provides, C@M=N. Repeatable.");
ABSL_FLAG(bool, needs_reinit_on_dep_reload, false,
          "Reload it whenever a provider of a contract it depends on is reloaded.");

namespace {

int Usage(absl::string_view why) {
  std::fprintf(stderr,
               "polyplug-mkmanifest: %.*s\n"
               "usage: polyplug-mkmanifest --out FILE --name NAME --version X.Y.Z --file LIB\n"
               "         [--provides C@M]... [--depends C@M]... [--bundle-dependency NAME]...\n"
               "         [--function-count C@M=N]... [--needs-reinit-on-dep-reload]\n",
               static_cast<int>(why.size()), why.data());
  return 2;
}

// A flag as the command line spells it, and the absl flag that holds it.
struct FlagArg {
  absl::string_view spelling;   // "--bundle-dependency"
  absl::string_view absl_name;  // "bundle_dependency"
  bool takes_value = true;
  // Set for a repeatable flag: every occurrence adds a value.
  absl::Flag<std::vector<std::string>>* repeated = nullptr;
};

const FlagArg kFlagArgs[] = {
    {"--out", "out"},
    {"--name", "name"},
    {"--version", "bundle_version"},
    {"--file", "file"},
    {"--provides", "provides", true, &FLAGS_provides},
    {"--depends", "depends", true, &FLAGS_depends},
    {"--bundle-dependency", "bundle_dependency", true, &FLAGS_bundle_dependency},
    {"--function-count", "function_count", true, &FLAGS_function_count},
    {"--needs-reinit-on-dep-reload", "needs_reinit_on_dep_reload", false},
};

// Sets the flags from the command line: "--flag VALUE" for a flag that takes a value,
// "--flag" for the switch, as kFlagArgs spells them. INVALID_ARGUMENT, with the message
// Usage() prints, for any other argument or a value missing at the end.
//
// absl::ParseCommandLine alone would keep only the last occurrence of a flag (and a
// std::vector flag's one value would be split at its commas), exit 1 rather than 2 on an
// unknown argument, and take --version and --help for itself. So the arguments are checked
// here first, the repeatable flags' values collected and set with absl::SetFlag, and absl
// parses the rest, each handed over as --ABSL_NAME=VALUE.
absl::Status ParseFlags(int argc, char** argv) {
  std::vector<std::string> for_absl = {argv[0]};
  std::map<absl::Flag<std::vector<std::string>>*, std::vector<std::string>> repeated;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    const FlagArg* flag = nullptr;
    for (const FlagArg& f : kFlagArgs) {
      if (arg == f.spelling) flag = &f;
    }
    if (flag == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown argument ", arg));
    if (!flag->takes_value) {
      for_absl.push_back(absl::StrCat("--", flag->absl_name));
      continue;
    }
    if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
    const absl::string_view value = argv[++i];
    if (flag->repeated != nullptr) {
      repeated[flag->repeated].emplace_back(value);
    } else {
      for_absl.push_back(absl::StrCat("--", flag->absl_name, "=", value));
    }
  }
  for (auto& [flag, values] : repeated) absl::SetFlag(flag, values);
  std::vector<char*> for_absl_argv;
  for (std::string& arg : for_absl) for_absl_argv.push_back(arg.data());
  absl::ParseCommandLine(static_cast<int>(for_absl_argv.size()), for_absl_argv.data());
  return absl::OkStatus();
}

// manifest.toml is written line by line, in the order docs/WRITING_BUNDLES.md shows, with
// each value's text written by toml++: strings quoted, and escaped wherever TOML requires
// (quotes, backslashes, newlines and other control characters). Not one toml::table
// streamed whole, because toml++ 3.x keeps a table's keys sorted, writes arrays as
// [ "a" ], and holds integers as int64_t, while ids are u64 and half of them exceed
// INT64_MAX: ids are written here as bare decimals, which ParseManifest reads back exactly
// (core/src/manifest.cc, QuoteLargeIntegers).
std::string TomlText(const toml::node& value) {
  std::ostringstream text;
  // Basic strings only (no literal or multi-line ones); UTF-8 is kept as it is.
  text << toml::toml_formatter(value, toml::format_flags::allow_unicode_strings);
  return text.str();
}

std::string TomlString(absl::string_view text) {
  return TomlText(toml::value<std::string>(std::string(text)));
}

// An inline array of strings: ["a", "b"].
std::string TomlStringArray(const std::vector<std::string>& items) {
  std::vector<std::string> values;
  for (const std::string& item : items) values.push_back(TomlString(item));
  return absl::StrCat("[", absl::StrJoin(values, ", "), "]");
}

// Whether TomlString(text) reads back as `text`. It does for UTF-8 text; TOML holds nothing
// else, and toml++ writes other bytes as other characters (or drops them) without failing.
bool TomlKeeps(absl::string_view text) {
  try {
    toml::table read = toml::parse(absl::StrCat("v = ", TomlString(text)));
    return read["v"].value<std::string>() == text;
  } catch (const toml::parse_error&) {
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (absl::Status parsed = ParseFlags(argc, argv); !parsed.ok()) {
    return Usage(parsed.message());
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  const std::string name = absl::GetFlag(FLAGS_name);
  const std::string version = absl::GetFlag(FLAGS_bundle_version);
  const std::string file = absl::GetFlag(FLAGS_file);
  const std::vector<std::string> provides = absl::GetFlag(FLAGS_provides);
  const std::vector<std::string> depends = absl::GetFlag(FLAGS_depends);
  const std::vector<std::string> bundle_dependencies = absl::GetFlag(FLAGS_bundle_dependency);
  const std::vector<std::string> function_counts = absl::GetFlag(FLAGS_function_count);
  if (out.empty() || name.empty() || file.empty()) {
    return Usage("--out, --name and --file are required");
  }

  std::string text = "# Generated by polyplug-mkmanifest. id is FNV-1a 64 of name.\n";
  auto line = [&text](absl::string_view key, absl::string_view value) {
    absl::StrAppend(&text, key, " = ", value, "\n");
  };
  line("loader", TomlString("native"));
  line("name", TomlString(name));
  line("id", absl::StrCat(polyplug::core::BundleId(name)));  // a u64: see TomlText()
  line("version", TomlString(version));
  line("file", TomlString(file));
  line("needs_reinit_on_dep_reload",
       TomlText(toml::value<bool>(absl::GetFlag(FLAGS_needs_reinit_on_dep_reload))));
  line("provides", TomlStringArray(provides));
  line("bundle_dependencies", TomlStringArray(bundle_dependencies));
  if (!function_counts.empty()) {
    text += "\n[function_count]\n";
    for (const std::string& c : function_counts) {
      size_t eq = c.find('=');
      uint32_t n = 0;
      if (eq == std::string::npos || !absl::SimpleAtoi(c.substr(eq + 1), &n)) {
        return Usage(absl::StrCat("--function-count ", c, " must be CONTRACT@MAJOR=N"));
      }
      line(TomlString(c.substr(0, eq)), TomlText(toml::value<int64_t>(n)));
    }
  }
  for (const std::string& d : depends) {
    auto ref = polyplug::core::ParseContractRef(d);
    if (!ref.ok() || !ref->version) {
      return Usage(absl::StrCat("--depends ", d, " must be CONTRACT@MAJOR"));
    }
    const uint32_t major = ref->version->major;
    text += "\n[[dependency]]\n";
    line("kind", TomlString("contract"));
    line("contract", TomlString(d));
    line("min_version", TomlString(absl::StrCat(major, ".0")));
    line("contract_id", absl::StrCat(polyplug::core::GuestContractId(ref->name, major)));  // u64
  }

  // A value that is not UTF-8 would be written as another (TomlKeeps): refused, as the TOML
  // parser below would refuse it raw.
  const std::pair<absl::string_view, std::vector<std::string>> given[] = {
      {"--name", {name}},
      {"--version", {version}},
      {"--file", {file}},
      {"--provides", provides},
      {"--depends", depends},
      {"--bundle-dependency", bundle_dependencies},
      {"--function-count", function_counts},
  };
  for (const auto& [flag, values] : given) {
    for (const std::string& value : values) {
      if (TomlKeeps(value)) continue;
      std::fprintf(stderr,
                   "polyplug-mkmanifest: generated manifest is invalid: a value of %.*s is not "
                   "UTF-8 text\n",
                   static_cast<int>(flag.size()), flag.data());
      return 1;
    }
  }
  auto parsed = polyplug::core::ParseManifest(text, out);
  if (parsed.ok()) {
    if (absl::Status s = polyplug::core::ValidateManifest(*parsed); !s.ok()) parsed = s;
  }
  if (!parsed.ok()) {
    std::fprintf(stderr, "polyplug-mkmanifest: generated manifest is invalid: %s\n",
                 std::string(parsed.status().message()).c_str());
    return 1;
  }
  std::ofstream file_out(out, std::ios::trunc);
  file_out << text;
  if (!file_out) {
    std::fprintf(stderr, "polyplug-mkmanifest: cannot write %s\n", out.c_str());
    return 1;
  }
  return 0;
}
