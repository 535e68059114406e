// proto_note: a bundle whose code really uses a protobuf-generated message, on either of
// protobuf's runtimes. One source, three builds:
//
// proto_full (POLYPLUG_PROTO_FULL): test.proto_full@1 on the full runtime (libprotobuf).
//   Its generated code registers proto_full.proto in the process-wide descriptor pool when
//   the library is loaded, so the loader must refuse the bundle.
// proto_lite_v1 / proto_lite_v2 (POLYPLUG_PROTO_LITE_VERSION 1 or 2): test.proto_lite@1 on
//   the lite runtime (libprotobuf-lite), which registers nothing process-wide: the bundle
//   reloads. Both builds share the bundle and library name, so a test can copy v2's files
//   over a loaded v1 and reload.
//
// fn0: writes the version field (the build's version; 1 for proto_full) of a Note after a
//      serialise / parse round trip.
// invoke "roundtrip" -> "v1:" or "v2:" followed by the request, both read back from a Note
//        that went through a round trip.
#include <cstdint>
#include <string>
#include <string_view>

#include "polyplug/guest.hpp"

#if defined(POLYPLUG_PROTO_FULL)
#include "proto_full.pb.h"
namespace note_proto = polyplug::test::proto_full;
constexpr char kContract[] = "test.proto_full";
constexpr int32_t kVersion = 1;
#elif defined(POLYPLUG_PROTO_LITE_VERSION) && \
    (POLYPLUG_PROTO_LITE_VERSION == 1 || POLYPLUG_PROTO_LITE_VERSION == 2)
#include "proto_lite.pb.h"
namespace note_proto = polyplug::test::proto_lite;
constexpr char kContract[] = "test.proto_lite";
constexpr int32_t kVersion = POLYPLUG_PROTO_LITE_VERSION;
#else
#error "compile with -DPOLYPLUG_PROTO_FULL or -DPOLYPLUG_PROTO_LITE_VERSION=1 or 2"
#endif

namespace {

namespace guest = polyplug::guest;
using note_proto::Note;

Note RoundTrip(const Note& note) {
  std::string wire;
  Note parsed;
  if (!note.SerializeToString(&wire) || !parsed.ParseFromString(wire)) {
    throw guest::Error(POLYPLUG_ABI_GENERIC, "proto_note: the Note did not round-trip");
  }
  return parsed;
}

void Init(guest::Registrar& registrar) {
  registrar.Contract(kContract, {1, 0, 0})
      .Function(0,
                [](const guest::NativeCall<void>&) {
                  Note note;
                  note.set_version(kVersion);
                  return int32_t{RoundTrip(note).version()};
                })
      .Method("roundtrip", [](std::string_view request) {
        Note note;
        note.set_version(kVersion);
        note.set_text(std::string(request));
        const Note parsed = RoundTrip(note);
        return "v" + std::to_string(parsed.version()) + ":" + parsed.text();
      });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
