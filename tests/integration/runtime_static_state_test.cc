// Bundles whose static initialisers register into process-wide registries (protobuf's full
// runtime, Abseil flags): refused at load, before dlopen runs those initialisers, with what
// to do instead; the lite protobuf runtime loads and reloads. Also
// CheckProcessWideRegistries itself, on the test bundles and on synthetic ELF files.
#include <elf.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/src/process_wide_registries.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/abi.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using core::CheckProcessWideRegistries;
using core::ErrorReason;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

// Runs `method` of `contract`@1 on a stateless instance and returns its response.
absl::StatusOr<std::string> Invoke(const core::Runtime& runtime, absl::string_view contract,
                                   absl::string_view method, absl::string_view request) {
  // The pin keeps the interface and the code behind it alive until the call returns.
  const auto pin = runtime.Pin();
  absl::StatusOr<core::ContractHandle> handle = runtime.Find(core::GuestContractId(contract, 1), 1);
  if (!handle.ok()) return handle.status();
  absl::StatusOr<const PolyplugGuestContractInterface*> iface = runtime.Resolve(*handle);
  if (!iface.ok()) return iface.status();
  if ((*iface)->invoke == nullptr) return absl::FailedPreconditionError("no invoke entry");
  std::string response;
  const PolyplugByteSink sink{&response, [](void* context, const uint8_t* data, size_t len) {
                                static_cast<std::string*>(context)->append(
                                    reinterpret_cast<const char*>(data), len);
                              }};
  const PolyplugAbiError error = (*iface)->invoke(
      (*iface)->user_data, PolyplugGuestContractInstance{nullptr, (*iface)->contract_id},
      PolyplugStringView{method.data(), method.size()},
      PolyplugBytesView{reinterpret_cast<const uint8_t*>(request.data()), request.size()}, &sink);
  if (error.code != POLYPLUG_ABI_OK) return absl::InternalError(core::DescribeAbiError(error));
  return response;
}

class RuntimeStaticStateTest : public RuntimeTest {
 protected:
  // Loads `dir` expecting ARTIFACT_NOT_LOADABLE with nothing published, no event fired and
  // nothing left in the state directory. Returns the error message.
  std::string LoadExpectingRefusal(const fs::path& dir) {
    const uint64_t revision_before = runtime().registry().revision();
    absl::StatusOr<core::BundleInfo> loaded = runtime().LoadBundle(dir);
    EXPECT_THAT(loaded.status(), HasReason(ErrorReason::kArtifactNotLoadable));
    EXPECT_THAT(recorder().events(), IsEmpty());
    EXPECT_EQ(runtime().journal().last_seq(), 0u);
    EXPECT_THAT(runtime().ListBundles(), IsEmpty());
    EXPECT_THAT(runtime().registry().List(), IsEmpty());
    EXPECT_EQ(runtime().registry().revision(), revision_before);
    EXPECT_EQ(CountFilesUnder(state().path()), 0u) << "a refused load left its private copy";
    return std::string(loaded.status().message());
  }

  // The runtime still loads and runs a good bundle.
  void ExpectCounterLoads() {
    ASSERT_THAT(runtime().LoadBundle(Copy("counter_v1")).status(), IsOk());
    EXPECT_EQ(CallFn0(runtime(), "test.counter", 1).value_or(0), 1);
    EXPECT_THAT(Describe(recorder().events()), ElementsAre("LOADED counter"));
  }
};

TEST_F(RuntimeStaticStateTest, AFullProtobufBundleIsRefusedAtLoadAndTheRuntimeKeepsWorking) {
  const fs::path dir = Copy("proto_full");
  const std::string message = LoadExpectingRefusal(dir);
  EXPECT_THAT(
      message,
      AllOf(HasSubstr("bundle \"proto_full\""), HasSubstr((dir / "libproto_full.so").string()),
            HasSubstr("google::protobuf::internal::AddDescriptorsRunner"),
            HasSubstr("descriptor pool"), HasSubstr("LITE_RUNTIME"), HasSubstr("protobuf-lite")));
  ExpectCounterLoads();
}

TEST_F(RuntimeStaticStateTest, AnAbseilFlagBundleIsRefusedAtLoadAndTheRuntimeKeepsWorking) {
  const fs::path dir = Copy("absl_flag");
  const std::string message = LoadExpectingRefusal(dir);
  EXPECT_THAT(message, AllOf(HasSubstr("bundle \"absl_flag\""),
                             HasSubstr((dir / "libabsl_flag.so").string()),
                             HasSubstr("absl::flags_internal::RegisterCommandLineFlag"),
                             HasSubstr("Abseil flags"), HasSubstr("define flags in the host")));
  ExpectCounterLoads();
}

// Three dlopens of protobuf-lite code in one process (v1, v2 over it, v1 again), each from
// its own private copy, each running its own code.
TEST_F(RuntimeStaticStateTest, ALiteProtobufBundleLoadsAndReloadsTwice) {
  const fs::path dir = Copy("proto_lite_v1");
  absl::StatusOr<core::BundleInfo> loaded = runtime().LoadBundle(dir);
  ASSERT_THAT(loaded.status(), IsOk());
  std::vector<fs::path> images = {loaded->image};
  EXPECT_EQ(CallFn0(runtime(), "test.proto_lite", 1).value_or(0), 1);
  EXPECT_EQ(Invoke(runtime(), "test.proto_lite", "roundtrip", "hello").value_or(""), "v1:hello");

  for (const int version : {2, 1}) {
    SCOPED_TRACE(version);
    OverwriteArtifact(TestBundleDir(absl::StrCat("proto_lite_v", version)), dir);
    absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir);
    ASSERT_THAT(outcome.status(), IsOk());
    ASSERT_TRUE(outcome->ok()) << outcome->status;
    absl::StatusOr<core::BundleInfo> info = runtime().GetBundle("proto_lite");
    ASSERT_THAT(info.status(), IsOk());
    EXPECT_EQ(info->version.major, static_cast<uint32_t>(version));
    images.push_back(info->image);
    EXPECT_EQ(CallFn0(runtime(), "test.proto_lite", 1).value_or(0), version);
    EXPECT_EQ(Invoke(runtime(), "test.proto_lite", "roundtrip", "hello").value_or(""),
              absl::StrCat("v", version, ":hello"));
  }

  EXPECT_THAT(Describe(recorder().events()),
              ElementsAre("LOADED proto_lite", "PREPARING proto_lite", "RELOADED proto_lite",
                          "PREPARING proto_lite", "RELOADED proto_lite"));
  EXPECT_EQ(runtime().GetBundle("proto_lite")->reload_count, 2u);
  EXPECT_NE(images[0], images[1]);
  EXPECT_NE(images[1], images[2]);
  EXPECT_NE(images[0], images[2]);
  // No "still mapped after dlclose": each old image really left the process.
  EXPECT_THAT(log().Warnings(), IsEmpty()) << ToString(log().Warnings());
}

// CheckProcessWideRegistries on the test bundles as built.

fs::path BuiltArtifact(absl::string_view target, absl::string_view library) {
  return TestBundleDir(target) / absl::StrCat("lib", library, ".so");
}

TEST(CheckProcessWideRegistriesTest, RefusesTheFullProtobufBundle) {
  const fs::path artifact = BuiltArtifact("proto_full", "proto_full");
  const absl::Status status = CheckProcessWideRegistries(artifact, artifact, "proto_full");
  EXPECT_THAT(status, HasReason(ErrorReason::kArtifactNotLoadable));
  EXPECT_EQ(status.message(),
            absl::StrCat("bundle \"proto_full\": artifact ", artifact.string(),
                         " imports google::protobuf::internal::AddDescriptorsRunner: protobuf's "
                         "full runtime registers every generated .proto file in the "
                         "process-wide descriptor pool when the library is loaded, and a second "
                         "copy (the next reload) aborts the host; generate with option "
                         "optimize_for = LITE_RUNTIME and link protobuf-lite, or keep the "
                         "message types in the host"));
}

TEST(CheckProcessWideRegistriesTest, RefusesTheAbseilFlagBundle) {
  const fs::path artifact = BuiltArtifact("absl_flag", "absl_flag");
  const absl::Status status = CheckProcessWideRegistries(artifact, artifact, "absl_flag");
  EXPECT_THAT(status, HasReason(ErrorReason::kArtifactNotLoadable));
  EXPECT_THAT(std::string(status.message()),
              AllOf(StartsWith(absl::StrCat("bundle \"absl_flag\": artifact ", artifact.string(),
                                            " imports absl::flags_internal::"
                                            "RegisterCommandLineFlag: Abseil flags")),
                    HasSubstr("define flags in the host, not in a bundle"),
                    Not(HasSubstr("it also imports"))));
}

TEST(CheckProcessWideRegistriesTest, AcceptsTheLiteProtobufBundlesAndAPlainOne) {
  for (const fs::path& artifact :
       {BuiltArtifact("proto_lite_v1", "proto_lite"), BuiltArtifact("proto_lite_v2", "proto_lite"),
        BuiltArtifact("counter_v1", "counter")}) {
    EXPECT_THAT(CheckProcessWideRegistries(artifact, artifact, "b"), IsOk()) << artifact;
  }
}

TEST(CheckProcessWideRegistriesTest, ReadsOneFileAndNamesTheOther) {
  TempDir temp;
  const fs::path staged = temp / "1-1-libproto_full.so";
  fs::copy_file(BuiltArtifact("proto_full", "proto_full"), staged);
  const fs::path artifact = temp / "bundle" / "libproto_full.so";  // need not exist
  const absl::Status status = CheckProcessWideRegistries(staged, artifact, "proto_full");
  EXPECT_THAT(status, HasReason(ErrorReason::kArtifactNotLoadable));
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(absl::StrCat("artifact ", artifact.string(), " imports")),
                    Not(HasSubstr(staged.string()))));
}

// What CheckArtifact and dlopen judge is OK here.
TEST(CheckProcessWideRegistriesTest, FilesWithoutReadableSectionHeadersAreLeftToOtherChecks) {
  TempDir temp;
  const std::string full = ReadFile(BuiltArtifact("proto_full", "proto_full"));
  ASSERT_GT(full.size(), sizeof(Elf64_Ehdr));

  WriteFile(temp / "empty.so", "");
  WriteFile(temp / "text.so", "not an ELF file at all\n");
  WriteFile(temp / "header_only.so", full.substr(0, sizeof(Elf64_Ehdr)));
  // What sstrip leaves: no section header table.
  std::string stripped = full;
  Elf64_Ehdr header;
  std::memcpy(&header, stripped.data(), sizeof(header));
  header.e_shoff = 0;
  header.e_shnum = 0;
  header.e_shstrndx = 0;
  std::memcpy(stripped.data(), &header, sizeof(header));
  WriteFile(temp / "sstripped.so", stripped);
  // Section headers pointing past the end of the file.
  std::string cut = full.substr(0, full.size() / 2);
  WriteFile(temp / "cut.so", cut);

  for (const char* name :
       {"empty.so", "text.so", "header_only.so", "sstripped.so", "cut.so", "does_not_exist.so"}) {
    EXPECT_THAT(CheckProcessWideRegistries(temp / name, temp / name, "b"), IsOk()) << name;
  }
}

// A minimal ELF64 shared object with only a null section, .dynsym and .dynstr: one symbol
// per name, undefined (imported) unless `defined`.
void WriteElfWithDynamicSymbols(const fs::path& path, const std::vector<std::string>& names,
                                bool defined = false) {
  std::string strings(1, '\0');
  std::vector<Elf64_Sym> symbols(1);  // index 0: the null symbol
  for (const std::string& name : names) {
    Elf64_Sym symbol{};
    symbol.st_name = static_cast<Elf64_Word>(strings.size());
    symbol.st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC);
    symbol.st_shndx = defined ? 1 : SHN_UNDEF;
    symbols.push_back(symbol);
    strings += name;
    strings += '\0';
  }
  strings.resize((strings.size() + 7) / 8 * 8, '\0');

  const uint64_t strings_at = sizeof(Elf64_Ehdr);
  const uint64_t symbols_at = strings_at + strings.size();
  const uint64_t sections_at = symbols_at + symbols.size() * sizeof(Elf64_Sym);
  Elf64_Shdr sections[3] = {};
  sections[1].sh_type = SHT_DYNSYM;
  sections[1].sh_offset = symbols_at;
  sections[1].sh_size = symbols.size() * sizeof(Elf64_Sym);
  sections[1].sh_link = 2;
  sections[1].sh_info = 1;
  sections[1].sh_entsize = sizeof(Elf64_Sym);
  sections[2].sh_type = SHT_STRTAB;
  sections[2].sh_offset = strings_at;
  sections[2].sh_size = strings.size();

  Elf64_Ehdr header{};
  std::memcpy(header.e_ident, ELFMAG, SELFMAG);
  header.e_ident[EI_CLASS] = ELFCLASS64;
  header.e_ident[EI_DATA] = ELFDATA2LSB;
  header.e_ident[EI_VERSION] = EV_CURRENT;
  header.e_type = ET_DYN;
  header.e_machine = EM_X86_64;
  header.e_version = EV_CURRENT;
  header.e_ehsize = sizeof(Elf64_Ehdr);
  header.e_shoff = sections_at;
  header.e_shentsize = sizeof(Elf64_Shdr);
  header.e_shnum = 3;

  std::string bytes(reinterpret_cast<const char*>(&header), sizeof(header));
  bytes += strings;
  bytes.append(reinterpret_cast<const char*>(symbols.data()), symbols.size() * sizeof(Elf64_Sym));
  bytes.append(reinterpret_cast<const char*>(sections), sizeof(sections));
  WriteFile(path, bytes);
}

absl::Status CheckImports(const std::vector<std::string>& names, bool defined = false) {
  TempDir temp;
  WriteElfWithDynamicSymbols(temp / "libb.so", names, defined);
  return CheckProcessWideRegistries(temp / "libb.so", temp / "libb.so", "b");
}

struct ImportCase {
  std::string symbol;   // mangled, as in .dynsym
  std::string printed;  // what the message names
  std::string registry;
};

// Mangled names seen with `nm -D --undefined-only` on libraries built against Debian 12's
// packages (protobuf 3.21.12, Abseil 20220623 with inline namespace debian3, gflags 2.2.2
// with namespace google, LLVM 14), and the variants other builds produce.
TEST(CheckProcessWideRegistriesTest, MatchesEachKnownRegistrationWhateverItsVariant) {
  const std::vector<ImportCase> cases = {
      {"_ZN6google8protobuf8internal20AddDescriptorsRunnerC1EPKNS1_15DescriptorTableE",
       "google::protobuf::internal::AddDescriptorsRunner", "descriptor pool"},
      {"_ZN6google8protobuf8internal20AddDescriptorsRunnerC2EPKNS1_15DescriptorTableE",
       "google::protobuf::internal::AddDescriptorsRunner", "descriptor pool"},
      {"_ZN6google8protobuf8internal14AddDescriptorsEPKNS1_15DescriptorTableE",
       "google::protobuf::internal::AddDescriptors", "descriptor pool"},
      {"_ZN6google8protobuf14DescriptorPool24InternalAddGeneratedFileEPKvi",
       "google::protobuf::DescriptorPool::InternalAddGeneratedFile", "descriptor pool"},
      {"_ZN4absl7debian314flags_internal23RegisterCommandLineFlagERNS0_15CommandLineFlagEPKc",
       "absl::flags_internal::RegisterCommandLineFlag", "Abseil flags"},
      {"_ZN4absl12lts_2022062314flags_internal23RegisterCommandLineFlagERNS0_"
       "15CommandLineFlagEPKc",
       "absl::flags_internal::RegisterCommandLineFlag", "Abseil flags"},
      {"_ZN4absl14flags_internal23RegisterCommandLineFlagERNS_15CommandLineFlagEPKc",
       "absl::flags_internal::RegisterCommandLineFlag", "Abseil flags"},
      {"_ZN4absl7debian314flags_internal6RetireEPKcPKvPc", "absl::flags_internal::Retire",
       "Abseil flags"},
      {"_ZN6google14FlagRegistererC1IiEEPKcS3_S3_PT_S5_", "google::FlagRegisterer", "gflags"},
      {"_ZN6gflags14FlagRegistererC1IbEEPKcS3_S3_PT_S5_", "gflags::FlagRegisterer", "gflags"},
      {"_ZN4llvm2cl6Option11addArgumentEv", "llvm::cl::Option::addArgument", "LLVM"},
  };
  for (const ImportCase& c : cases) {
    SCOPED_TRACE(c.symbol);
    const absl::Status status = CheckImports({"malloc", c.symbol, "free"});
    EXPECT_THAT(status, HasReason(ErrorReason::kArtifactNotLoadable));
    EXPECT_THAT(
        std::string(status.message()),
        AllOf(HasSubstr(absl::StrCat(" imports ", c.printed, ": ")), HasSubstr(c.registry)));
    // Defined rather than imported: no call into a shared library's registry.
    EXPECT_THAT(CheckImports({c.symbol}, /*defined=*/true), IsOk());
  }
}

TEST(CheckProcessWideRegistriesTest, LeavesUsersOfTheSameLibrariesAlone) {
  EXPECT_THAT(
      CheckImports({
          // Reading a flag the host defines (ABSL_DECLARE_FLAG + absl::GetFlag).
          "_ZNK4absl7debian314flags_internal8FlagImpl11ReadOneWordEv",
          "_ZN4absl7debian314flags_internal13AbslParseFlagENS0_11string_viewEPiPNSt7__"
          "cxx1112basic_stringIcSt11char_traitsIcESaIcEEE",
          // Protobuf messages without generated descriptors, and lazy descriptor assignment.
          "_ZNK6google8protobuf11MessageLite17SerializeToStringEPNSt7__cxx1112basic_"
          "stringIcSt11char_traitsIcESaIcEEE",
          "_ZN6google8protobuf8internal17AssignDescriptorsEPFPKNS1_15DescriptorTableEvEPSt9once_"
          "flagRKNS0_8MetadataE",
          // Parsing the command line with LLVM, and unrelated names that look alike.
          "_ZN4llvm2cl23ParseCommandLineOptionsEiPKPKcNS_9StringRefEPNS_11raw_ostreamES2_b",
          "_ZN4llvm2cl6Option14removeArgumentEv",
          "AddDescriptorsRunner",
          "RegisterCommandLineFlag",
      }),
      IsOk());
  EXPECT_THAT(CheckImports({}), IsOk());
}

TEST(CheckProcessWideRegistriesTest, NamesEveryRegistryFoundOnce) {
  const absl::Status status = CheckImports({
      "_ZN4llvm2cl6Option11addArgumentEv",
      "_ZN4absl7debian314flags_internal6RetireEPKcPKvPc",
      "_ZN6google8protobuf8internal20AddDescriptorsRunnerC1EPKNS1_15DescriptorTableE",
      "_ZN4absl7debian314flags_internal23RegisterCommandLineFlagERNS0_15CommandLineFlagEPKc",
      "_ZN6google14FlagRegistererC1IiEEPKcS3_S3_PT_S5_",
      "_ZN6google8protobuf8internal20AddDescriptorsRunnerC2EPKNS1_15DescriptorTableE",
  });
  EXPECT_THAT(status, HasReason(ErrorReason::kArtifactNotLoadable));
  const std::string message(status.message());
  // In the table's order, each registry by its first import there.
  const std::vector<std::string> expected = {
      " imports google::protobuf::internal::AddDescriptorsRunner: ",
      "; it also imports absl::flags_internal::RegisterCommandLineFlag: ",
      "; it also imports google::FlagRegisterer: ",
      "; it also imports llvm::cl::Option::addArgument: ",
  };
  size_t at = 0;
  for (const std::string& part : expected) {
    const size_t found = message.find(part, at);
    ASSERT_NE(found, std::string::npos) << part << " in order in: " << message;
    at = found + part.size();
  }
  EXPECT_EQ(message.find("absl::flags_internal::Retire"), std::string::npos) << message;
  EXPECT_EQ(message.find("descriptor pool"), message.rfind("descriptor pool")) << message;
}

}  // namespace
}  // namespace polyplug::test
