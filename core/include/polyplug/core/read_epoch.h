// ReadEpoch: lets lock-free readers keep published data alive while writers replace it.
//
// A reader brackets its access with a Guard (two atomic increments on a striped counter,
// never blocking). A writer publishes new data, then calls Synchronize(), which returns
// once every reader that could have seen the old data has left; the old data can then be
// freed. Writers must not hold a Guard on the same thread while synchronizing.
#ifndef POLYPLUG_CORE_READ_EPOCH_H_
#define POLYPLUG_CORE_READ_EPOCH_H_

#include <array>
#include <atomic>
#include <cstdint>

namespace polyplug::core {

class ReadEpoch {
 public:
  class Guard {
   public:
    explicit Guard(const ReadEpoch& epoch);
    ~Guard();
    Guard(Guard&& other) noexcept : counter_(other.counter_) { other.counter_ = nullptr; }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    Guard& operator=(Guard&&) = delete;

   private:
    std::atomic<int64_t>* counter_;
  };

  ReadEpoch() = default;
  ReadEpoch(const ReadEpoch&) = delete;
  ReadEpoch& operator=(const ReadEpoch&) = delete;

  Guard Enter() const { return Guard(*this); }

  // Waits until all readers that entered before this call have left. Serialize callers.
  void Synchronize();

 private:
  static constexpr int kStripes = 16;
  struct alignas(64) Counter {
    std::atomic<int64_t> value{0};
  };
  std::atomic<uint64_t> epoch_{0};
  mutable std::array<std::array<Counter, kStripes>, 2> readers_{};
};

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_READ_EPOCH_H_
