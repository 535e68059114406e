// The crash record (core/crash_record.h) against processes that really die: each test forks
// a child that installs a record, marks bundle code and then faults, aborts or is killed;
// the parent reads the record the way polyplug-host --supervise does and checks whom it
// blames. The child dlopens a real test bundle for the address-range cases.
#include <dlfcn.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include "core/src/crash_record.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using core::BundleActivity;
using core::BundleCodeScope;
using core::CrashRecordImage;
using ::testing::HasSubstr;

__attribute__((noinline, no_sanitize("address", "undefined"))) void Segfault() {
  volatile int* volatile nowhere = nullptr;
  *nowhere = 1;
}

class CrashRecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
#if defined(__SANITIZE_THREAD__)
    GTEST_SKIP() << "forks and faults on purpose; TSan intercepts both";
#endif
  }

  // Runs `body` in a child process with a crash record installed; returns its wait status.
  int RunChild(const std::function<void()>& body) {
    const fs::path record = dir_.path() / "record";
    const pid_t pid = fork();
    if (pid == 0) {
      // Faults go to the record's handler and then kill the child (not to ASan's report).
      for (int s : {SIGSEGV, SIGBUS, SIGABRT}) std::signal(s, SIG_DFL);
      if (!core::InstallCrashRecord(record).ok()) _exit(100);
      body();
      _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
  }

  core::CrashReport Read(int status) {
    auto report =
        core::ReadCrashRecord(dir_.path() / "record", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? *report : core::CrashReport{};
  }

  TempDir dir_;
};

TEST_F(CrashRecordTest, AFaultInsideAScopeIsBlamedOnItsImage) {
  const int status = RunChild([] {
    CrashRecordImage image = CrashRecordImage::Register(7, "crasher", "3.0.0", "abc123");
    BundleCodeScope init(BundleActivity::kInit, &image, nullptr);
    Segfault();
  });
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  const core::CrashReport report = Read(status);
  EXPECT_EQ(report.signal, SIGSEGV);
  ASSERT_TRUE(report.culprit.has_value()) << report.explanation;
  EXPECT_EQ(report.culprit->bundle_id, 7u);
  EXPECT_EQ(report.culprit->bundle_name, "crasher");
  EXPECT_EQ(report.culprit->version, "3.0.0");
  EXPECT_EQ(report.culprit->sha256, "abc123");
  EXPECT_EQ(report.culprit->activity, BundleActivity::kInit);
  EXPECT_THAT(report.explanation, HasSubstr("was running polyplug_init of bundle \"crasher\""));
}

TEST_F(CrashRecordTest, AbortInACallIsBlamedOnTheInnermostScopeOfThatThread) {
  const fs::path bundle = CopyTestBundle("counter_v1", dir_.path());
  const int status = RunChild([bundle] {
    void* handle = dlopen((bundle / "libcounter.so").c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) _exit(101);
    CrashRecordImage outer = CrashRecordImage::Register(1, "outer", "1.0.0", "aaa");
    CrashRecordImage counter = CrashRecordImage::Register(2, "counter", "1.0.0", "bbb");
    counter.SetRangeOf(bundle / "libcounter.so");
    // Another thread sits in bundle code of `outer` meanwhile.
    std::atomic<bool> parked{false};
    std::thread other([&] {
      BundleCodeScope waiting(BundleActivity::kInvoke, &outer, nullptr, "wait");
      parked = true;
      pause();
    });
    while (!parked) std::this_thread::yield();
    BundleCodeScope call(BundleActivity::kInvoke, &outer, nullptr, "outer");
    // A nested call into counter, found by the address of the code called.
    BundleCodeScope nested(BundleActivity::kInvoke, nullptr, dlsym(handle, "polyplug_init"),
                           "count");
    std::abort();
  });
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
  const core::CrashReport report = Read(status);
  EXPECT_EQ(report.signal, SIGABRT);
  ASSERT_TRUE(report.culprit.has_value()) << report.explanation;
  EXPECT_EQ(report.culprit->bundle_name, "counter");
  EXPECT_EQ(report.culprit->sha256, "bbb");
  EXPECT_EQ(report.culprit->detail, "count");
}

TEST_F(CrashRecordTest, AFaultingInstructionInsideAnImageIsBlamedOnItWithoutAScope) {
  const fs::path bundle = CopyTestBundle("counter_v1", dir_.path());
  const int status = RunChild([bundle] {
    void* handle = dlopen((bundle / "libcounter.so").c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) _exit(101);
    CrashRecordImage counter = CrashRecordImage::Register(2, "counter", "1.0.0", "bbb");
    counter.SetRangeOf(bundle / "libcounter.so");
    // As a thread of the bundle's own would: no scope, and the faulting instruction is in
    // the image. Executing its ELF header (mapped, not executable) faults right there.
    Dl_info info{};
    if (dladdr(dlsym(handle, "polyplug_init"), &info) == 0) _exit(102);
    reinterpret_cast<void (*)()>(info.dli_fbase)();
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit " << WEXITSTATUS(status);
  const core::CrashReport report = Read(status);
  ASSERT_TRUE(report.culprit.has_value()) << report.explanation;
  EXPECT_EQ(report.culprit->bundle_name, "counter");
  EXPECT_EQ(report.culprit->activity, BundleActivity::kBundleCode);
  EXPECT_THAT(report.explanation, HasSubstr("hit an instruction of bundle \"counter\""));
}

TEST_F(CrashRecordTest, AFaultOutsideBundleCodeBlamesNobody) {
  const int status = RunChild([] {
    CrashRecordImage image = CrashRecordImage::Register(7, "bystander", "1.0.0", "abc");
    { BundleCodeScope done(BundleActivity::kInvoke, &image, nullptr, "m"); }
    Segfault();
  });
  ASSERT_TRUE(WIFSIGNALED(status));
  const core::CrashReport report = Read(status);
  EXPECT_FALSE(report.culprit.has_value());
  EXPECT_THAT(report.explanation, HasSubstr("was not running bundle code"));
}

TEST_F(CrashRecordTest, WithoutTheHandlerOnlyAFatalSignalBlamesTheOneThreadInBundleCode) {
  // Dies without its handler running, as an external kill (or a fault it never saw) does.
  const int status = RunChild([] {
    CrashRecordImage image = CrashRecordImage::Register(7, "stuck", "1.0.0", "abc");
    BundleCodeScope call(BundleActivity::kInvoke, &image, nullptr, "spin");
    kill(getpid(), SIGKILL);
    pause();
  });
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  auto killed = core::ReadCrashRecord(dir_.path() / "record", SIGKILL);
  ASSERT_TRUE(killed.ok());
  EXPECT_FALSE(killed->culprit.has_value()) << "SIGKILL comes from outside";
  EXPECT_EQ(killed->signal, 0);
  auto faulted = core::ReadCrashRecord(dir_.path() / "record", SIGSEGV);
  ASSERT_TRUE(faulted.ok());
  ASSERT_TRUE(faulted->culprit.has_value()) << faulted->explanation;
  EXPECT_EQ(faulted->culprit->bundle_name, "stuck");
  EXPECT_THAT(faulted->explanation, HasSubstr("before its handler ran"));
}

TEST_F(CrashRecordTest, AMissingOrForeignFileIsNoCrashRecord) {
  WriteFile(dir_.path() / "record", std::string(300000, 'x'));
  auto report = core::ReadCrashRecord(dir_.path() / "record", SIGSEGV);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->culprit.has_value());
  EXPECT_THAT(report->explanation, HasSubstr("left no crash record"));
  EXPECT_FALSE(core::ReadCrashRecord(dir_.path() / "absent", SIGSEGV).ok());
}

}  // namespace
}  // namespace polyplug::test
