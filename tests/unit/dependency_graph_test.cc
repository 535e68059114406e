// The orderings of core/src/dependency_graph.h as pure functions: discovery's load order
// and the reload cascade's schedule (docs/SEMANTICS.md §5, §9).
#include "core/src/dependency_graph.h"

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace polyplug::core {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Pair;

// ---- OrderForLoading --------------------------------------------------------------------------

TEST(OrderForLoadingTest, ProvidersComeFirstAndTiesGoByName) {
  const LoadOrder order = OrderForLoading(
      {{"app", {"net", "log"}}, {"net", {"log"}}, {"log", {}}, {"zeta", {}}, {"alpha", {}}}, {});
  EXPECT_THAT(order.order, ElementsAre("alpha", "log", "net", "app", "zeta"));
  EXPECT_THAT(order.blocked, IsEmpty());
  EXPECT_THAT(order.cycle, IsEmpty());
}

TEST(OrderForLoadingTest, NeedsOutsideTheGraphAndOnItselfAreIgnored) {
  const LoadOrder order = OrderForLoading({{"b", {"a", "loaded-elsewhere", "b"}}, {"a", {}}}, {});
  EXPECT_THAT(order.order, ElementsAre("a", "b"));
}

TEST(OrderForLoadingTest, WhatNeedsAnExcludedNodeIsLeftOutTransitively) {
  const LoadOrder order = OrderForLoading(
      {{"a", {}}, {"bad", {}}, {"c", {"bad"}}, {"d", {"c"}}, {"e", {"a"}}}, {"bad", "unknown"});
  EXPECT_THAT(order.order, ElementsAre("a", "e"));
  EXPECT_THAT(order.blocked,
              ElementsAre(Pair("c", ElementsAre("bad")), Pair("d", ElementsAre("c"))));
  EXPECT_THAT(order.cycle, IsEmpty());
}

TEST(OrderForLoadingTest, ACycleLeavesOutItsNodesAndWhatNeedsThemAndOrdersTheRest) {
  const LoadOrder order =
      OrderForLoading({{"x", {"y"}}, {"y", {"x"}}, {"uses-x", {"x"}}, {"free", {}}}, {});
  EXPECT_THAT(order.order, ElementsAre("free"));
  EXPECT_THAT(order.cycle, ElementsAre("uses-x", "x", "y"));
}

// ---- CascadeSchedule ------------------------------------------------------------------------

// Builds graphs by name (ids are 1, 2, ... in the order given) and runs a schedule to its
// end, as the runtime does, writing each step as "PREPARING b<-a" (reloaded as a dependent
// of a), "FAILED b" or "RELOADED b".
class CascadeScheduleTest : public ::testing::Test {
 protected:
  void Node(const std::string& name, std::vector<std::string> providers = {},
            bool needs_reinit = true) {
    const uint64_t id = ids_.size() + 1;
    ids_[name] = id;
    names_[id] = name;
    nodes_.push_back({id, name, needs_reinit, {}});
    pending_providers_[id] = std::move(providers);
  }

  std::vector<std::string> Run(const std::string& root, const std::set<std::string>& failing = {}) {
    std::vector<CascadeNode> graph = nodes_;
    for (CascadeNode& node : graph) {
      for (const std::string& p : pending_providers_.at(node.id))
        node.providers.push_back(ids_.at(p));
    }
    CascadeSchedule schedule(graph, ids_.at(root));
    std::vector<std::string> steps;
    std::set<std::string> reloaded;
    for (int guard = 0; guard < 1000; ++guard) {
      const CascadeSchedule::Step step = schedule.Next();
      if (step.kind == CascadeSchedule::Step::Kind::kDone) return steps;
      const std::string& name = names_.at(step.bundle);
      if (step.kind == CascadeSchedule::Step::Kind::kFinish) {
        steps.push_back("RELOADED " + name);
        continue;
      }
      EXPECT_TRUE(reloaded.insert(name).second) << name << " reloaded twice";
      const bool fails = failing.contains(name);
      steps.push_back(
          absl::StrCat(fails ? "FAILED " : "PREPARING ", name, "<-", names_.at(step.parent)));
      schedule.Reloaded(step.bundle, !fails);
    }
    ADD_FAILURE() << "the schedule does not end";
    return steps;
  }

 private:
  std::map<std::string, uint64_t> ids_;
  std::map<uint64_t, std::string> names_;
  std::vector<CascadeNode> nodes_;
  std::map<uint64_t, std::vector<std::string>> pending_providers_;
};

TEST_F(CascadeScheduleTest, ALeafReloadsAlone) {
  Node("a");
  Node("b", {"a"});
  EXPECT_THAT(Run("b"), ElementsAre("RELOADED b"));
}

TEST_F(CascadeScheduleTest, AChainNestsEachDependentInItsProvidersBracket) {
  Node("a");
  Node("b", {"a"});
  Node("c", {"b"});
  EXPECT_THAT(Run("a"), ElementsAre("PREPARING b<-a", "PREPARING c<-b", "RELOADED c", "RELOADED b",
                                    "RELOADED a"));
}

TEST_F(CascadeScheduleTest, DependentsWithoutTheOptInAreLeftAloneAndSoAreTheirs) {
  Node("a");
  Node("b", {"a"}, /*needs_reinit=*/false);
  Node("c", {"b"});
  Node("d", {"a"});
  EXPECT_THAT(Run("a"), ElementsAre("PREPARING d<-a", "RELOADED d", "RELOADED a"));
}

TEST_F(CascadeScheduleTest, SiblingsGoInNameOrderWhateverTheGraphOrder) {
  Node("a");
  Node("x", {"a"});
  Node("b", {"a"});
  Node("m", {"a"});
  EXPECT_THAT(Run("a"), ElementsAre("PREPARING b<-a", "RELOADED b", "PREPARING m<-a", "RELOADED m",
                                    "PREPARING x<-a", "RELOADED x", "RELOADED a"));
}

TEST_F(CascadeScheduleTest, ADiamondReloadsTheSharedDependentOnceAfterBothProviders) {
  Node("a");
  Node("b", {"a"});
  Node("c", {"a", "b"});
  EXPECT_THAT(Run("a"), ElementsAre("PREPARING b<-a", "PREPARING c<-b", "RELOADED c", "RELOADED b",
                                    "RELOADED a"));
}

TEST_F(CascadeScheduleTest, ADependentWaitsForItsLaterProviderWhateverTheNames) {
  Node("a");
  Node("z", {"a"});
  Node("c", {"a", "z"});
  EXPECT_THAT(Run("a"), ElementsAre("PREPARING z<-a", "PREPARING c<-z", "RELOADED c", "RELOADED z",
                                    "RELOADED a"));
}

// e needs b and c, siblings under a: it waits for both, and reloads in the bracket of the
// one whose reload made it ready.
TEST_F(CascadeScheduleTest, ADependentOfTwoSiblingsReloadsInTheSecondOnesBracket) {
  Node("a");
  Node("b", {"a"});
  Node("c", {"a"});
  Node("e", {"b", "c"});
  EXPECT_THAT(Run("a"), ElementsAre("PREPARING b<-a", "RELOADED b", "PREPARING c<-a",
                                    "PREPARING e<-c", "RELOADED e", "RELOADED c", "RELOADED a"));
}

TEST_F(CascadeScheduleTest, ADependentReachedByTwoPathsReloadsOnceWhenTheFirstFails) {
  Node("a");
  Node("b", {"a"});
  Node("c", {"a", "b"});
  EXPECT_THAT(Run("a", {"b"}),
              ElementsAre("FAILED b<-a", "PREPARING c<-a", "RELOADED c", "RELOADED a"));
}

TEST_F(CascadeScheduleTest, ADependentOfOnlyAFailedBundleIsNotReloaded) {
  Node("a");
  Node("b", {"a"});
  Node("c", {"b"});
  Node("d", {"c"});
  EXPECT_THAT(Run("a", {"b"}), ElementsAre("FAILED b<-a", "RELOADED a"));
}

// m waits for z (which fails) after b's bracket closed: it still reloads, once, in the root's.
TEST_F(CascadeScheduleTest, ADependentWhoseLastProviderFailsReloadsInTheRootsBracket) {
  Node("a");
  Node("b", {"a"});
  Node("z", {"a"});
  Node("m", {"b", "z"});
  EXPECT_THAT(Run("a", {"z"}), ElementsAre("PREPARING b<-a", "RELOADED b", "FAILED z<-a",
                                           "PREPARING m<-a", "RELOADED m", "RELOADED a"));
}

TEST_F(CascadeScheduleTest, ACycleThroughTheRootEnds) {
  Node("x", {"y"});
  Node("y", {"x"});
  EXPECT_THAT(Run("x"), ElementsAre("PREPARING y<-x", "RELOADED y", "RELOADED x"));
}

TEST_F(CascadeScheduleTest, ACycleAmongDependentsIsEnteredAtItsSmallestName) {
  Node("a");
  Node("z", {"a", "y"});
  Node("y", {"a", "z"});
  EXPECT_THAT(Run("a"), ElementsAre("PREPARING y<-a", "PREPARING z<-y", "RELOADED z", "RELOADED y",
                                    "RELOADED a"));
}

TEST_F(CascadeScheduleTest, ACycleDeeperDownIsEnteredUnderItsProvider) {
  Node("a");
  Node("b", {"a"});
  Node("x", {"b", "w"});
  Node("w", {"b", "x"});
  EXPECT_THAT(Run("a"), ElementsAre("PREPARING b<-a", "PREPARING w<-b", "PREPARING x<-w",
                                    "RELOADED x", "RELOADED w", "RELOADED b", "RELOADED a"));
}

TEST_F(CascadeScheduleTest, ALargeGraphReloadsEveryReachableDependentOnceAfterItsProviders) {
  // A layered graph: each node of layer k depends on two nodes of layer k-1.
  Node("n0_0");
  for (int layer = 1; layer < 6; ++layer) {
    for (int i = 0; i < 5; ++i) {
      const int prev = layer == 1 ? 1 : 5;
      Node(absl::StrCat("n", layer, "_", i), {absl::StrCat("n", layer - 1, "_", i % prev),
                                              absl::StrCat("n", layer - 1, "_", (i + 1) % prev)});
    }
  }
  const std::vector<std::string> steps = Run("n0_0");
  std::map<std::string, size_t> at;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].rfind("PREPARING ", 0) == 0) {
      const std::string name = steps[i].substr(10, steps[i].find("<-") - 10);
      EXPECT_FALSE(at.contains(name)) << name;
      at[name] = i;
    }
  }
  EXPECT_EQ(at.size(), 25u);
  for (int layer = 2; layer < 6; ++layer) {
    for (int i = 0; i < 5; ++i) {
      const std::string name = absl::StrCat("n", layer, "_", i);
      EXPECT_GT(at[name], at[absl::StrCat("n", layer - 1, "_", i)]) << name;
      EXPECT_GT(at[name], at[absl::StrCat("n", layer - 1, "_", (i + 1) % 5)]) << name;
    }
  }
}

}  // namespace
}  // namespace polyplug::core
