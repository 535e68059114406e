// ReadPin: what a lock-free reader holds while it uses interface pointers it resolved.
//
// Registry::Pin and Runtime::Pin hand one out. While it lives, every interface pointer
// resolved under it stays valid, and writers (the swap of a reload, an unload) wait for it
// to be released; so a thread must not load, reload or unload while it holds one. Taking
// and releasing a pin are two atomic operations that never block. Move-only; it may be
// released on any thread.
#ifndef POLYPLUG_CORE_READ_PIN_H_
#define POLYPLUG_CORE_READ_PIN_H_

#include <atomic>
#include <cstdint>
#include <utility>

namespace polyplug::core {

class ReadEpoch;

class ReadPin {
 public:
  ReadPin(ReadPin&& other) noexcept : counter_(std::exchange(other.counter_, nullptr)) {}
  ReadPin(const ReadPin&) = delete;
  ReadPin& operator=(const ReadPin&) = delete;
  ReadPin& operator=(ReadPin&&) = delete;
  ~ReadPin();

 private:
  friend class ReadEpoch;
  explicit ReadPin(std::atomic<int64_t>* counter) : counter_(counter) {}

  std::atomic<int64_t>* counter_;  // the reader count this pin was added to
};

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_READ_PIN_H_
