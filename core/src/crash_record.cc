#include "core/src/crash_record.h"

#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "polyplug/core/error.h"

namespace polyplug::core {
namespace {

// The file layout. Fixed size, plain data and lock-free atomics only: it is written by
// the living process (signal handler included) and read by another after its death.
constexpr char kMagic[8] = {'P', 'P', 'C', 'R', 'A', 'S', 'H', '1'};
constexpr uint32_t kLayoutVersion = 1;
constexpr int kMaxImages = 256;
constexpr int kMaxThreads = 512;
constexpr int kMaxFrames = 4;

struct Header {
  char magic[8];
  uint32_t layout_version;
  int32_t pid;
  std::atomic<int32_t> crash_tid;  // set once, by the first fatal signal
  std::atomic<int32_t> crash_signal;
  std::atomic<uint64_t> crash_pc;
  std::atomic<uint64_t> crash_address;
};

struct Image {
  std::atomic<uint32_t> used;
  uint64_t bundle_id;
  char name[128];
  char version[32];
  char sha256[65];
  std::atomic<uint64_t> begin;
  std::atomic<uint64_t> end;
};

struct Frame {
  uint8_t activity;
  int32_t image;  // -1: look `code` up among the images
  uint64_t code;
  char detail[64];
};

struct ThreadSlot {
  std::atomic<int32_t> tid;  // 0: free
  std::atomic<uint32_t> depth;
  Frame frames[kMaxFrames];
};

struct RecordFile {
  Header header;
  Image images[kMaxImages];
  ThreadSlot threads[kMaxThreads];
};

static_assert(std::atomic<uint64_t>::is_always_lock_free &&
                  std::atomic<int32_t>::is_always_lock_free,
              "the record is shared with a signal handler and another process");

constexpr int kFatalSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS};

std::atomic<RecordFile*> g_record{nullptr};
struct sigaction g_previous[NSIG];
std::mutex g_images_mu;

int32_t ThisThreadId() { return static_cast<int32_t>(syscall(SYS_gettid)); }

void CopyText(char* out, size_t capacity, absl::string_view text) {
  const size_t n = std::min(capacity - 1, text.size());
  if (n > 0) std::memcpy(out, text.data(), n);  // an empty view's data() may be null
  out[n] = '\0';
}

std::string TextOf(const char* text, size_t capacity) {
  return std::string(text, strnlen(text, capacity));
}

uint64_t ProgramCounter(void* context) {
  const auto* uc = static_cast<const ucontext_t*>(context);
#if defined(__x86_64__)
  return static_cast<uint64_t>(uc->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__)
  return static_cast<uint64_t>(uc->uc_mcontext.pc);
#else
  (void)uc;
  return 0;
#endif
}

void OnFatalSignal(int signal, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  if (RecordFile* record = g_record.load(std::memory_order_relaxed)) {
    int32_t none = 0;
    if (record->header.crash_tid.compare_exchange_strong(none, ThisThreadId())) {
      record->header.crash_signal.store(signal);
      record->header.crash_pc.store(ProgramCounter(context));
      record->header.crash_address.store(reinterpret_cast<uint64_t>(info->si_addr));
    }
  }
  // Pass the signal on to whoever handled it before us (by default: the process dies). A
  // fault comes back when the instruction runs again; a sent signal must be sent again.
  sigaction(signal, &g_previous[signal], nullptr);
  if (info->si_code <= 0) raise(signal);
  errno = saved_errno;
}

// This thread's slot in the record, claimed on first use and freed when the thread
// ends. Also gives the thread an alternate signal stack (unless it has one), so that a
// stack overflow in bundle code still reaches the handler.
class ThreadState {
 public:
  ~ThreadState() {
    if (slot_ != nullptr) {
      slot_->depth.store(0);
      slot_->tid.store(0);
    }
    if (altstack_ != nullptr) {
      stack_t disable{};
      disable.ss_flags = SS_DISABLE;
      sigaltstack(&disable, nullptr);
      munmap(altstack_, kAltStackBytes);
    }
  }

  ThreadSlot* Slot(RecordFile* record) {
    if (slot_ != nullptr || claim_failed_) return slot_;
    const int32_t tid = ThisThreadId();
    for (ThreadSlot& slot : record->threads) {
      int32_t free_slot = 0;
      if (slot.tid.compare_exchange_strong(free_slot, tid)) {
        slot.depth.store(0);
        slot_ = &slot;
        break;
      }
    }
    claim_failed_ = slot_ == nullptr;
    stack_t current{};
    if (sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_DISABLE) != 0) {
      void* stack =
          mmap(nullptr, kAltStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (stack != MAP_FAILED) {
        stack_t alt{};
        alt.ss_sp = stack;
        alt.ss_size = kAltStackBytes;
        if (sigaltstack(&alt, nullptr) == 0) {
          altstack_ = stack;
        } else {
          munmap(stack, kAltStackBytes);
        }
      }
    }
    return slot_;
  }

 private:
  static constexpr size_t kAltStackBytes = 64 * 1024;
  ThreadSlot* slot_ = nullptr;
  bool claim_failed_ = false;
  void* altstack_ = nullptr;
};

ThreadState& ThisThread() {
  thread_local ThreadState state;
  return state;
}

bool IsFatalSignal(int signal) {
  return std::find(std::begin(kFatalSignals), std::end(kFatalSignals), signal) !=
         std::end(kFatalSignals);
}

}  // namespace

std::string SignalName(int signal) {
  switch (signal) {
    case SIGSEGV:
      return "SIGSEGV";
    case SIGBUS:
      return "SIGBUS";
    case SIGILL:
      return "SIGILL";
    case SIGFPE:
      return "SIGFPE";
    case SIGABRT:
      return "SIGABRT";
    case SIGTRAP:
      return "SIGTRAP";
    case SIGSYS:
      return "SIGSYS";
    case SIGKILL:
      return "SIGKILL";
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    default:
      return absl::StrCat("signal ", signal);
  }
}

std::string DescribeActivity(BundleActivity activity, absl::string_view detail) {
  switch (activity) {
    case BundleActivity::kLoad:
      return "its static constructors (dlopen)";
    case BundleActivity::kInit:
      return "polyplug_init";
    case BundleActivity::kCreateInstance:
      return "create_instance";
    case BundleActivity::kInvoke:
      return absl::StrCat("method \"", detail, "\"");
    case BundleActivity::kDestroyInstance:
      return "destroy_instance";
    case BundleActivity::kUnload:
      return "its static destructors (dlclose)";
    case BundleActivity::kBundleCode:
      return "its code (a thread outside a call from the host)";
    case BundleActivity::kNone:
      break;
  }
  return "unknown code";
}

absl::Status InstallCrashRecord(const std::filesystem::path& file) {
  if (g_record.load() != nullptr) {
    return MakeError(ErrorReason::kInternal, "a crash record is already installed");
  }
  const int fd = open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("crash record ", file.string(), ": ", std::strerror(errno)));
  }
  void* mapped = MAP_FAILED;
  if (ftruncate(fd, sizeof(RecordFile)) == 0) {
    mapped = mmap(nullptr, sizeof(RecordFile), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  const int error = errno;
  close(fd);
  if (mapped == MAP_FAILED) {
    return MakeError(ErrorReason::kInternal,
                     absl::StrCat("crash record ", file.string(), ": ", std::strerror(error)));
  }
  auto* record = static_cast<RecordFile*>(mapped);  // zero-filled by ftruncate
  std::memcpy(record->header.magic, kMagic, sizeof(kMagic));
  record->header.layout_version = kLayoutVersion;
  record->header.pid = getpid();
  g_record.store(record);
  for (int signal : kFatalSignals) {
    struct sigaction action {};
    action.sa_sigaction = &OnFatalSignal;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(signal, &action, &g_previous[signal]);
  }
  return absl::OkStatus();
}

bool CrashRecordInstalled() { return g_record.load() != nullptr; }

CrashRecordImage& CrashRecordImage::operator=(CrashRecordImage&& other) noexcept {
  if (this != &other) {
    Clear();
    slot_ = other.slot_;
    other.slot_ = -1;
  }
  return *this;
}

CrashRecordImage CrashRecordImage::Register(uint64_t bundle_id, absl::string_view bundle_name,
                                            absl::string_view version, absl::string_view sha256) {
  CrashRecordImage image;
  RecordFile* record = g_record.load();
  if (record == nullptr) return image;
  std::lock_guard<std::mutex> lock(g_images_mu);
  for (int i = 0; i < kMaxImages; ++i) {
    Image& entry = record->images[i];
    if (entry.used.load() != 0) continue;
    entry.bundle_id = bundle_id;
    CopyText(entry.name, sizeof(entry.name), bundle_name);
    CopyText(entry.version, sizeof(entry.version), version);
    CopyText(entry.sha256, sizeof(entry.sha256), sha256);
    entry.begin.store(0);
    entry.end.store(0);
    entry.used.store(1);
    image.slot_ = i;
    break;
  }
  return image;
}

void CrashRecordImage::SetRangeOf(const std::filesystem::path& path) {
  RecordFile* record = g_record.load();
  if (record == nullptr || slot_ < 0) return;
  struct Search {
    const char* path;
    uint64_t begin = UINT64_MAX;
    uint64_t end = 0;
  } search{path.c_str()};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        auto* s = static_cast<Search*>(data);
        if (info->dlpi_name == nullptr || std::strcmp(info->dlpi_name, s->path) != 0) return 0;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& segment = info->dlpi_phdr[i];
          if (segment.p_type != PT_LOAD) continue;
          const uint64_t begin = info->dlpi_addr + segment.p_vaddr;
          s->begin = std::min(s->begin, begin);
          s->end = std::max(s->end, begin + segment.p_memsz);
        }
        return 1;
      },
      &search);
  if (search.end == 0) return;
  record->images[slot_].begin.store(search.begin);
  record->images[slot_].end.store(search.end);
}

void CrashRecordImage::Clear() {
  RecordFile* record = g_record.load();
  if (record == nullptr || slot_ < 0) return;
  std::lock_guard<std::mutex> lock(g_images_mu);
  record->images[slot_].used.store(0);
  slot_ = -1;
}

BundleCodeScope::BundleCodeScope(BundleActivity activity, const CrashRecordImage* image,
                                 const void* code, absl::string_view detail) {
  RecordFile* record = g_record.load(std::memory_order_relaxed);
  if (record == nullptr) return;
  ThreadSlot* slot = ThisThread().Slot(record);
  if (slot == nullptr) return;
  const uint32_t depth = slot->depth.load(std::memory_order_relaxed);
  if (depth < kMaxFrames) {
    Frame& frame = slot->frames[depth];
    frame.activity = static_cast<uint8_t>(activity);
    frame.image = image != nullptr ? image->slot() : -1;
    frame.code = reinterpret_cast<uint64_t>(code);
    CopyText(frame.detail, sizeof(frame.detail), detail);
  }
  // Counted past kMaxFrames too, so that the scopes' ends stay balanced.
  slot->depth.store(depth + 1, std::memory_order_release);
  slot_ = slot;
}

BundleCodeScope::~BundleCodeScope() {
  if (slot_ == nullptr) return;
  auto* slot = static_cast<ThreadSlot*>(slot_);
  slot->depth.store(slot->depth.load(std::memory_order_relaxed) - 1, std::memory_order_release);
}

absl::StatusOr<CrashReport> ReadCrashRecord(const std::filesystem::path& file, int death_signal) {
  const int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return MakeError(ErrorReason::kInternal,
                     absl::StrCat("crash record ", file.string(), ": ", std::strerror(errno)));
  }
  void* mapped = mmap(nullptr, sizeof(RecordFile), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (mapped == MAP_FAILED) {
    return MakeError(ErrorReason::kInternal,
                     absl::StrCat("crash record ", file.string(), ": cannot map it"));
  }
  const auto* record = static_cast<const RecordFile*>(mapped);
  CrashReport report;
  auto done = [&](CrashReport r) {
    munmap(mapped, sizeof(RecordFile));
    return r;
  };
  if (std::memcmp(record->header.magic, kMagic, sizeof(kMagic)) != 0 ||
      record->header.layout_version != kLayoutVersion) {
    report.explanation = "the process left no crash record (it died before writing one)";
    return done(std::move(report));
  }
  auto culprit_of = [&](int image, BundleActivity activity, absl::string_view detail) {
    const Image& entry = record->images[image];
    CrashCulprit culprit;
    culprit.bundle_id = entry.bundle_id;
    culprit.bundle_name = TextOf(entry.name, sizeof(entry.name));
    culprit.version = TextOf(entry.version, sizeof(entry.version));
    culprit.sha256 = TextOf(entry.sha256, sizeof(entry.sha256));
    culprit.activity = activity;
    culprit.detail = std::string(detail);
    return culprit;
  };
  auto image_at = [&](uint64_t address) -> int {
    for (int i = 0; i < kMaxImages; ++i) {
      const Image& entry = record->images[i];
      if (entry.used.load() != 0 && address >= entry.begin.load() && address < entry.end.load())
        return i;
    }
    return -1;
  };
  // The innermost recorded frame of a thread, as a culprit (when its image is known).
  auto frame_culprit = [&](const ThreadSlot& slot) -> std::optional<CrashCulprit> {
    const uint32_t depth = std::min<uint32_t>(slot.depth.load(), kMaxFrames);
    if (depth == 0) return std::nullopt;
    const Frame& frame = slot.frames[depth - 1];
    int image = frame.image;
    if (image < 0 || image >= kMaxImages || record->images[image].used.load() == 0)
      image = image_at(frame.code);
    if (image < 0) return std::nullopt;
    return culprit_of(image, static_cast<BundleActivity>(frame.activity),
                      TextOf(frame.detail, sizeof(frame.detail)));
  };

  const int32_t crash_tid = record->header.crash_tid.load();
  if (crash_tid != 0) {
    report.signal = record->header.crash_signal.load();
    const std::string signal = SignalName(report.signal);
    const int pc_image = image_at(record->header.crash_pc.load());
    std::optional<CrashCulprit> in_frame;
    for (const ThreadSlot& slot : record->threads) {
      if (slot.tid.load() == crash_tid) in_frame = frame_culprit(slot);
    }
    if (pc_image >= 0 && (!in_frame || record->images[pc_image].bundle_id != in_frame->bundle_id)) {
      report.culprit = culprit_of(pc_image, BundleActivity::kBundleCode, "");
      report.explanation = absl::StrCat(signal, " hit an instruction of bundle \"",
                                        report.culprit->bundle_name, "\"");
    } else if (in_frame) {
      report.culprit = std::move(in_frame);
      report.explanation =
          absl::StrCat("the thread that received ", signal, " was running ",
                       DescribeActivity(report.culprit->activity, report.culprit->detail),
                       " of bundle \"", report.culprit->bundle_name, "\"");
    } else {
      report.explanation =
          absl::StrCat("the thread that received ", signal, " was not running bundle code");
    }
    return done(std::move(report));
  }
  // The handler did not run (the process was killed, or exited): only a fatal signal with
  // exactly one thread in bundle code points at a bundle.
  std::vector<CrashCulprit> running;
  for (const ThreadSlot& slot : record->threads) {
    if (slot.tid.load() == 0) continue;
    if (auto culprit = frame_culprit(slot)) running.push_back(*std::move(culprit));
  }
  if (IsFatalSignal(death_signal) && running.size() == 1) {
    report.signal = death_signal;
    report.culprit = running.front();
    report.explanation =
        absl::StrCat("the process died of ", SignalName(death_signal),
                     " before its handler ran, while only one thread was in bundle code: ",
                     DescribeActivity(report.culprit->activity, report.culprit->detail),
                     " of bundle \"", report.culprit->bundle_name, "\"");
  } else if (running.empty()) {
    report.explanation = "no thread was running bundle code";
  } else {
    report.explanation = absl::StrCat(running.size(),
                                      " threads were running bundle code and none is known "
                                      "to have crashed");
  }
  return done(std::move(report));
}

}  // namespace polyplug::core
