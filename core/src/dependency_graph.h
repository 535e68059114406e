// Orderings of bundles by their dependencies, as pure functions of a graph: the order in
// which discovery loads bundles (docs/SEMANTICS.md §9) and the order in which a reload's
// cascade reinitialises dependents (§5). No I/O, no runtime: the runtime builds the graph,
// these decide the order, and unit tests pin every case.
#ifndef POLYPLUG_CORE_SRC_DEPENDENCY_GRAPH_H_
#define POLYPLUG_CORE_SRC_DEPENDENCY_GRAPH_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace polyplug::core {

// ---- Discovery: load order ------------------------------------------------------------------

struct LoadOrder {
  std::vector<std::string> order;  // every node after the nodes it needs
  // Left out because they need an excluded node or one left out before (directly or not),
  // in the order found: the node and those it needs that cannot load.
  std::vector<std::pair<std::string, std::vector<std::string>>> blocked;
  // Left out because no order exists among them: a dependency cycle, with the nodes that
  // need it (which of them are on the cycle is not told apart). Sorted; empty if none.
  std::vector<std::string> cycle;
};

// Orders the nodes of `needs` (node -> the nodes it needs; a need that is not a node of
// the graph is ignored) so that providers come first; among nodes ready at the same time,
// the smallest name first, so the order is deterministic. `excluded` nodes are left out,
// and so is every node that needs one.
LoadOrder OrderForLoading(const std::map<std::string, std::set<std::string>>& needs,
                          const std::set<std::string>& excluded);

// ---- Cascade: reinitialisation order ---------------------------------------------------------

struct CascadeNode {
  uint64_t id = 0;
  std::string name;
  bool needs_reinit_on_dep_reload = false;
  std::vector<uint64_t> providers;  // the bundles it depends on (declared contracts)
};

// Which bundles one reload operation reinitialises after its root was swapped, in which
// order, and in whose PREPARING..RELOADED bracket. Every bundle reloads at most once; a
// dependent that opted in reloads after every bundle it depends on that the operation will
// still reload (so its init sees them all new), and only if one of them did reload. Among
// bundles that could go next, the smallest name goes first. A cycle is entered at its
// smallest name. Not thread-safe; one per operation.
//
// The caller loops: Next() says reload `bundle` (as a dependent of `parent`, whose bracket
// is open), then the caller reports Reloaded(bundle, swapped); or finish `bundle` (its
// bracket closes: RELOADED), the root last; or done.
class CascadeSchedule {
 public:
  struct Step {
    enum class Kind { kReload, kFinish, kDone };
    Kind kind = Kind::kDone;
    uint64_t bundle = 0;
    uint64_t parent = 0;  // kReload only
  };

  // `graph` holds every loaded bundle; `root` was reloaded and swapped.
  CascadeSchedule(std::vector<CascadeNode> graph, uint64_t root);

  Step Next();
  // The outcome of the last kReload step: `swapped` when the bundle reached its new version.
  void Reloaded(uint64_t bundle, bool swapped);

 private:
  // Bundles the operation will still reload: opted-in dependents, not yet reached, of a
  // bundle that was swapped, and theirs in turn.
  std::set<uint64_t> Planned() const;
  bool Ready(uint64_t id, const std::set<uint64_t>& planned) const;
  bool DependsOn(uint64_t id, uint64_t provider) const;
  // The first of `ids` in name order that `accept` accepts; 0 when none.
  template <class Accept>
  uint64_t FirstByName(const std::set<uint64_t>& ids, Accept accept) const;
  Step Reload(uint64_t bundle, uint64_t parent);

  std::map<uint64_t, CascadeNode> nodes_;
  std::map<uint64_t, std::vector<uint64_t>> dependents_;  // provider -> bundles using it
  std::set<uint64_t> reached_;                            // reloaded or tried
  std::set<uint64_t> swapped_;
  std::vector<uint64_t> open_;  // brackets open, innermost last
};

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_SRC_DEPENDENCY_GRAPH_H_
