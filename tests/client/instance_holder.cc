// instance_holder TARGET COUNT: a client process for lease tests. Makes COUNT instances of
// test.counter@1 through the client library (so under its session), calls "count" once on
// each, prints each instance id on a line, then "ready", and waits to be killed.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "polyplug/client/host_client.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: instance_holder TARGET COUNT\n");
    return 2;
  }
  auto client = polyplug::client::HostClient::Connect(argv[1]);
  if (!client.ok()) {
    std::fprintf(stderr, "instance_holder: %s\n", client.status().ToString().c_str());
    return 1;
  }
  const int count = std::atoi(argv[2]);
  for (int i = 0; i < count; ++i) {
    auto instance = (*client)->CreateInstance("test.counter@1");
    if (!instance.ok()) {
      std::fprintf(stderr, "instance_holder: %s\n", instance.status().ToString().c_str());
      return 1;
    }
    auto counted = (*client)->Invoke(*instance, "count", "");
    if (!counted.ok()) {
      std::fprintf(stderr, "instance_holder: %s\n", counted.status().ToString().c_str());
      return 1;
    }
    std::printf("%llu\n", static_cast<unsigned long long>(instance->instance_id()));
  }
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) pause();
}
