// example.gameplay@1: the contract between polyplug-game (game.cc) and its gameplay bundle
// (gameplay.cc). Both sides include this header; it is the whole contract.
//
// The game calls the native functions below every frame, in process, through a core
// handle: an index into the function table, no serialisation, nanoseconds per call. The
// message-style method "describe" is there for callers in other processes (polyplugctl
// call, polyplug-editor): it answers "gameplay generation G".
//
// The game owns the World (everything that must survive a reload); an instance of the
// contract holds the bundle's own state (the score). The game saves that state with kSave
// before it destroys the instance at PREPARING and hands it back to create_instance as args
// (8 bytes, an int64_t; empty args start at 0): the cr.h pattern.
#ifndef POLYPLUG_EXAMPLES_GAME_RUNTIME_GAMEPLAY_CONTRACT_H_
#define POLYPLUG_EXAMPLES_GAME_RUNTIME_GAMEPLAY_CONTRACT_H_

#include <cstdint>

namespace gameplay {

inline constexpr char kContractName[] = "example.gameplay";
inline constexpr uint32_t kContractMajor = 1;

// Indices into the interface's function table.
enum Function : uint32_t {
  // args: none. out: int32_t, the generation of the code (what the build was told it is).
  kGeneration = 0,
  // args: const StepArgs*. out: int32_t, the generation of the code that ran the step.
  // Advances the world by one fixed step and adds to the instance's score. Needs an
  // instance (INVALID_ARGUMENT on a stateless one).
  kStep = 1,
  // args: none. out: int64_t, the instance's score, to hand to the next instance.
  kSave = 2,
  kFunctionCount = 3,
};

inline constexpr int kParticleCount = 512;

struct Particle {
  float x, y, vx, vy;
};

// Owned by the game; the bundle changes it only during a kStep call.
struct World {
  int64_t frame = 0;
  Particle particles[kParticleCount];
};

struct StepArgs {
  int64_t frame;  // the frame number, from 1
  double dt;      // the fixed step, in seconds
  World* world;   // valid during the call only: the bundle must not keep it
};

}  // namespace gameplay

#endif  // POLYPLUG_EXAMPLES_GAME_RUNTIME_GAMEPLAY_CONTRACT_H_
