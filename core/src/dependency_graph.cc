#include "core/src/dependency_graph.h"

#include <algorithm>
#include <iterator>
#include <tuple>

namespace polyplug::core {

LoadOrder OrderForLoading(const std::map<std::string, std::set<std::string>>& needs,
                          const std::set<std::string>& excluded) {
  LoadOrder out;
  std::set<std::string> done;
  std::set<std::string> left_out;
  for (const std::string& name : excluded) {
    if (needs.contains(name)) left_out.insert(name);
  }
  // Kahn's algorithm, one node at a time: the smallest ready name goes first. A node that
  // needs a node left out is left out too; the scan restarts since the sets changed.
  while (out.order.size() + left_out.size() < needs.size()) {
    const std::string* next = nullptr;
    bool left_one_out = false;
    for (const auto& [name, wanted] : needs) {
      if (done.contains(name) || left_out.contains(name)) continue;
      std::vector<std::string> blocked;
      std::set_intersection(wanted.begin(), wanted.end(), left_out.begin(), left_out.end(),
                            std::back_inserter(blocked));
      if (!blocked.empty()) {
        out.blocked.emplace_back(name, std::move(blocked));
        left_out.insert(name);
        left_one_out = true;
        break;
      }
      const std::string& self = name;  // (clang 14 cannot capture a structured binding)
      const bool ready = std::all_of(wanted.begin(), wanted.end(), [&](const std::string& w) {
        return w == self || !needs.contains(w) || done.contains(w);
      });
      if (ready) {
        next = &name;
        break;
      }
    }
    if (left_one_out) continue;
    if (next == nullptr) {
      for (const auto& [name, wanted] : needs) {
        if (!done.contains(name) && !left_out.contains(name)) out.cycle.push_back(name);
      }
      left_out.insert(out.cycle.begin(), out.cycle.end());
      continue;
    }
    done.insert(*next);
    out.order.push_back(*next);
  }
  return out;
}

CascadeSchedule::CascadeSchedule(std::vector<CascadeNode> graph, uint64_t root) {
  for (CascadeNode& node : graph) {
    for (uint64_t provider : node.providers) {
      if (provider != node.id) dependents_[provider].push_back(node.id);
    }
    const uint64_t id = node.id;
    nodes_.emplace(id, std::move(node));
  }
  reached_.insert(root);
  swapped_.insert(root);
  open_.push_back(root);
}

std::set<uint64_t> CascadeSchedule::Planned() const {
  std::set<uint64_t> planned;
  std::vector<uint64_t> frontier(swapped_.begin(), swapped_.end());
  while (!frontier.empty()) {
    const uint64_t provider = frontier.back();
    frontier.pop_back();
    auto it = dependents_.find(provider);
    if (it == dependents_.end()) continue;
    for (uint64_t dependent : it->second) {
      if (reached_.contains(dependent) || !nodes_.at(dependent).needs_reinit_on_dep_reload)
        continue;
      if (planned.insert(dependent).second) frontier.push_back(dependent);
    }
  }
  return planned;
}

bool CascadeSchedule::DependsOn(uint64_t id, uint64_t provider) const {
  const std::vector<uint64_t>& providers = nodes_.at(id).providers;
  return id != provider &&
         std::find(providers.begin(), providers.end(), provider) != providers.end();
}

bool CascadeSchedule::Ready(uint64_t id, const std::set<uint64_t>& planned) const {
  const std::vector<uint64_t>& providers = nodes_.at(id).providers;
  return std::none_of(providers.begin(), providers.end(),
                      [&](uint64_t p) { return p != id && planned.contains(p); });
}

template <class Accept>
uint64_t CascadeSchedule::FirstByName(const std::set<uint64_t>& ids, Accept accept) const {
  const CascadeNode* best = nullptr;
  for (uint64_t id : ids) {
    const CascadeNode& node = nodes_.at(id);
    if (!accept(id)) continue;
    if (best == nullptr || std::tie(node.name, node.id) < std::tie(best->name, best->id)) {
      best = &node;
    }
  }
  return best == nullptr ? 0 : best->id;
}

CascadeSchedule::Step CascadeSchedule::Reload(uint64_t bundle, uint64_t parent) {
  reached_.insert(bundle);
  return Step{Step::Kind::kReload, bundle, parent};
}

CascadeSchedule::Step CascadeSchedule::Next() {
  if (open_.empty()) return Step{};
  const uint64_t top = open_.back();
  const std::set<uint64_t> planned = Planned();
  std::set<uint64_t> ready;
  for (uint64_t id : planned) {
    if (Ready(id, planned)) ready.insert(id);
  }
  // A dependent of the innermost open bundle that waits for nobody: in its bracket.
  if (uint64_t next = FirstByName(ready, [&](uint64_t id) { return DependsOn(id, top); })) {
    return Reload(next, top);
  }
  // Nobody anywhere is ready although some are planned: only a cycle waits like that.
  // Enter it here, at the smallest name among the innermost bundle's dependents.
  if (ready.empty()) {
    if (uint64_t next = FirstByName(planned, [&](uint64_t id) { return DependsOn(id, top); })) {
      return Reload(next, top);
    }
  }
  // Nothing left for the innermost bundle: its bracket closes.
  if (open_.size() > 1) {
    open_.pop_back();
    return Step{Step::Kind::kFinish, top, 0};
  }
  // Back at the root: what is left became ready after the bracket of the bundle it
  // depends on had closed (a provider it also waited for failed), or sits on a cycle
  // entered from there. It reloads in the root's bracket.
  if (uint64_t next = FirstByName(ready.empty() ? planned : ready, [](uint64_t) { return true; })) {
    return Reload(next, top);
  }
  open_.pop_back();
  return Step{Step::Kind::kFinish, top, 0};
}

void CascadeSchedule::Reloaded(uint64_t bundle, bool swapped) {
  if (!swapped) return;
  swapped_.insert(bundle);
  open_.push_back(bundle);
}

}  // namespace polyplug::core
