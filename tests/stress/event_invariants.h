// Checks of a runtime's (or host's) phase-event sequence shared by the stress tests. Works
// on core::PhaseEvent and client::PhaseEvent alike: both carry the same fields, and their
// Phase enums have the same values (0 = PREPARING).
#ifndef POLYPLUG_TESTS_STRESS_EVENT_INVARIANTS_H_
#define POLYPLUG_TESTS_STRESS_EVENT_INVARIANTS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace polyplug::test {

// Problems of `events` (in the order they were delivered), at most `max_problems` of them:
//  - seqs are consecutive (no gap, no duplicate, no reordering);
//  - the events of one operation (one root_reload_id; an event with root 0 stands alone)
//    form one contiguous block: operations never interleave;
//  - every reload (reload_id with a PREPARING or a terminal event) has exactly one PREPARING
//    and exactly one terminal event (RELOADED or FAILED), PREPARING first;
//  - a cascaded reload nests inside its parent: parent PREPARING < child PREPARING and
//    child terminal < parent terminal.
template <typename Event>
std::vector<std::string> SequenceProblems(const std::vector<Event>& events,
                                          size_t max_problems = 10) {
  std::vector<std::string> problems;
  auto add = [&](std::string problem) {
    if (problems.size() < max_problems) problems.push_back(std::move(problem));
  };
  struct Reload {
    int preparing = 0;
    int terminal = 0;
    uint64_t preparing_seq = 0;
    uint64_t terminal_seq = 0;
    uint64_t parent = 0;
  };
  std::map<uint64_t, Reload> reloads;
  std::set<std::string> finished_ops;
  std::string current_op;
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& e = events[i];
    if (i > 0 && e.seq != events[i - 1].seq + 1) {
      add(absl::StrCat("seq ", e.seq, " follows seq ", events[i - 1].seq));
    }
    const std::string op = e.root_reload_id != 0 ? absl::StrCat("op ", e.root_reload_id)
                                                 : absl::StrCat("event ", e.seq);
    if (op != current_op) {
      if (finished_ops.count(op) != 0) {
        add(absl::StrCat("seq ", e.seq, " (", e.bundle_name, ") resumes ", op,
                         " after another operation's events"));
      }
      if (!current_op.empty()) finished_ops.insert(current_op);
      current_op = op;
    }
    const bool preparing = static_cast<int>(e.phase) == 0;
    if (e.reload_id == 0 || (!preparing && !e.IsTerminal())) continue;
    Reload& r = reloads[e.reload_id];
    r.parent = e.parent_reload_id;
    if (preparing) {
      ++r.preparing;
      r.preparing_seq = e.seq;
    } else {
      ++r.terminal;
      r.terminal_seq = e.seq;
      if (r.preparing == 0)
        add(absl::StrCat("reload ", e.reload_id, ": terminal before PREPARING"));
    }
  }
  for (const auto& [id, r] : reloads) {
    if (r.preparing != 1 || r.terminal != 1) {
      add(absl::StrCat("reload ", id, ": ", r.preparing, " PREPARING and ", r.terminal,
                       " terminal events"));
    }
    if (r.parent == 0) continue;
    auto parent = reloads.find(r.parent);
    if (parent == reloads.end()) {
      add(absl::StrCat("reload ", id, ": parent ", r.parent, " has no events"));
    } else if (!(parent->second.preparing_seq < r.preparing_seq &&
                 r.terminal_seq < parent->second.terminal_seq)) {
      add(absl::StrCat("reload ", id, " [", r.preparing_seq, ", ", r.terminal_seq,
                       "] does not nest inside its parent ", r.parent, " [",
                       parent->second.preparing_seq, ", ", parent->second.terminal_seq, "]"));
    }
  }
  return problems;
}

// How many terminal events of `events` belong to the primary reload `reload_id`.
template <typename Event>
int TerminalEventsOf(const std::vector<Event>& events, uint64_t reload_id) {
  int n = 0;
  for (const Event& e : events) {
    if (e.IsTerminal() && e.reload_id == reload_id) ++n;
  }
  return n;
}

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_STRESS_EVENT_INVARIANTS_H_
