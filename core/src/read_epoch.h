// ReadEpoch: lets lock-free readers keep published data alive while writers replace it.
//
// A reader brackets its access with a ReadPin from Enter() (two atomic increments on a
// striped counter, never blocking). A writer publishes new data, then calls Synchronize(),
// which returns once every reader that could have seen the old data has left; the old data
// can then be freed. Writers must not hold a pin on the same thread while synchronizing.
#ifndef POLYPLUG_CORE_SRC_READ_EPOCH_H_
#define POLYPLUG_CORE_SRC_READ_EPOCH_H_

#include <array>
#include <atomic>
#include <cstdint>

#include "polyplug/core/read_pin.h"

namespace polyplug::core {

class ReadEpoch {
 public:
  using Guard = ReadPin;

  ReadEpoch() = default;
  ReadEpoch(const ReadEpoch&) = delete;
  ReadEpoch& operator=(const ReadEpoch&) = delete;

  ReadPin Enter() const;

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

#endif  // POLYPLUG_CORE_SRC_READ_EPOCH_H_
