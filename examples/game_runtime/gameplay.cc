// gameplay: the bundle polyplug-game calls every frame (contract example.gameplay@1, see
// gameplay_contract.h).
//
// One source, several builds (examples/game_runtime/CMakeLists.txt): GAMEPLAY_GENERATION
// (default 1) is what kGeneration, kStep and "describe" report and picks the physics (1: a
// heavy world; 2: a light, bouncy one), and the contract version 1.<G-1>.0.
// GAMEPLAY_BROKEN makes polyplug_init fail (INIT_FAILED), for the failed-reload case: its
// manifest is valid, so a reload to it gets as far as PREPARING and init, then FAILED, and
// the previous version keeps running.
//
// Edit it and rebuild the polyplug_game_root target while polyplug-game --watch runs on the
// root that target stages (root/ beside polyplug-game in the build tree): the game prints the
// frame where the new code took over.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "gameplay_contract.h"
#include "polyplug/guest.hpp"

#ifndef GAMEPLAY_GENERATION
#define GAMEPLAY_GENERATION 1
#endif

namespace {

namespace guest = polyplug::guest;

constexpr int32_t kGeneration = GAMEPLAY_GENERATION;

// Tuning of this generation: gravity (units/s^2) and the share of speed a bounce keeps.
constexpr float kGravity = kGeneration == 1 ? -9.81f : -3.7f;
constexpr float kRestitution = kGeneration == 1 ? 0.6f : 0.9f;
constexpr float kBoxSize = 100.0f;

// The state of one instance: the score, which survives a reload because the game saves it
// (kSave) and hands it to the next instance as create_instance args.
struct GameplayState {
  explicit GameplayState(std::string_view args) {
    if (args.size() == sizeof score) std::memcpy(&score, args.data(), sizeof score);
  }
  int64_t score = 0;  // one point per bounce
};

using Call = guest::NativeCall<GameplayState>;

// Bounces off the walls of the box; returns whether it bounced off the floor.
bool Move(gameplay::Particle& p, float dt) {
  p.vy += kGravity * dt;
  p.x += p.vx * dt;
  p.y += p.vy * dt;
  if (p.x < 0.0f || p.x > kBoxSize) {
    p.x = p.x < 0.0f ? -p.x : 2.0f * kBoxSize - p.x;
    p.vx = -p.vx;
  }
  if (p.y > kBoxSize) {
    p.y = 2.0f * kBoxSize - p.y;
    p.vy = -p.vy;
  }
  if (p.y >= 0.0f) return false;
  p.y = -p.y;
  p.vy = -p.vy * kRestitution;
  if (p.vy < 1.0f) p.vy = 30.0f;  // came to rest: kick it up again
  return true;
}

int32_t Step(const Call& call) {
  GameplayState& state = call.RequireState();
  const auto& args = call.Args<gameplay::StepArgs>();
  if (args.world == nullptr) throw guest::Error(POLYPLUG_ABI_INVALID_ARGUMENT, "world is NULL");
  const auto dt = static_cast<float>(args.dt);
  for (gameplay::Particle& p : args.world->particles) {
    if (Move(p, dt)) ++state.score;
  }
  args.world->frame = args.frame;
  return kGeneration;
}

std::string Describe() { return "gameplay generation " + std::to_string(kGeneration); }

void Init(guest::Registrar& registrar) {
#ifdef GAMEPLAY_BROKEN
  throw guest::Error(POLYPLUG_ABI_GENERIC,
                     "gameplay: this build refuses to start (broken on purpose)");
#endif
  registrar
      .Contract<GameplayState>(gameplay::kContractName, {gameplay::kContractMajor,
                                                         static_cast<uint32_t>(kGeneration - 1), 0})
      .Function(gameplay::kGeneration, [](const Call&) { return kGeneration; })
      .Function<&Step>(gameplay::kStep)
      .Function(gameplay::kSave, [](const Call& call) { return call.RequireState().score; })
      .Method("describe", [](std::string_view) { return Describe(); });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
