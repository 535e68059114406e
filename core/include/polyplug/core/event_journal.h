// EventJournal: the bounded, sequenced record of every phase event of one runtime.
//
// It is the single source for in-process listeners and for every remote subscriber, so
// both see the same events in the same order. Thread-safe; listeners run on the thread
// that appended, after the journal's lock is released.
#ifndef POLYPLUG_CORE_EVENT_JOURNAL_H_
#define POLYPLUG_CORE_EVENT_JOURNAL_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <vector>

#include <mutex>
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "polyplug/core/phase_event.h"

namespace polyplug::core {

class EventJournal {
 public:
  using Listener = std::function<void(const PhaseEvent&)>;
  using ListenerId = uint64_t;

  // capacity >= 1 events are kept; older ones fall out of the ring.
  EventJournal(uint64_t host_epoch, size_t capacity);

  EventJournal(const EventJournal&) = delete;
  EventJournal& operator=(const EventJournal&) = delete;

  uint64_t host_epoch() const { return host_epoch_; }
  size_t capacity() const { return capacity_; }

  // Stamps epoch, seq and (if unset) the timestamp, stores the event, wakes waiters and
  // then calls the listeners in registration order. Returns the stored event.
  PhaseEvent Append(PhaseEvent event);

  // Seq of the newest event (0 when none yet) and of the oldest still held (0 when none).
  uint64_t last_seq() const;
  uint64_t earliest_seq() const;

  // Events with seq > after_seq, at most max_events. OUT_OF_RANGE (naming the earliest
  // available seq) when events after `after_seq` already fell out of the ring;
  // INVALID_ARGUMENT when after_seq is ahead of the journal.
  absl::StatusOr<std::vector<PhaseEvent>> ReadAfter(uint64_t after_seq,
                                                    size_t max_events = SIZE_MAX) const;

  // Blocks until an event with seq > after_seq exists or `timeout` passes; returns
  // whether one exists.
  bool AwaitAfter(uint64_t after_seq, absl::Duration timeout) const;

  // Listeners are called for every later Append, on the appending thread, with no
  // journal lock held. Removing a listener waits for none of its running calls.
  ListenerId AddListener(Listener listener);
  void RemoveListener(ListenerId id);

 private:
  const uint64_t host_epoch_;
  const size_t capacity_;

  mutable std::mutex mu_;
  mutable std::condition_variable appended_;
  std::deque<PhaseEvent> ring_;
  uint64_t next_seq_ = 1;

  mutable std::mutex listeners_mu_;
  std::map<ListenerId, std::shared_ptr<Listener>> listeners_;
  ListenerId next_listener_id_ = 1;
};

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_EVENT_JOURNAL_H_
