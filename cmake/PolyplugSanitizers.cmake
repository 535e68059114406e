# Sanitizer builds apply to everything the project compiles, bundles included, so that a
# bundle's code is instrumented the same way as the runtime that calls it.
#
# They compile at -O1 with line tables only (what a sanitizer report needs), whatever
# CMAKE_BUILD_TYPE says, and the tests at -O0 (tests/CMakeLists.txt): a sanitizer tree exists
# to run the suite under the sanitizer, and -O2 with full debug info made its build the
# longest stage of the test command. The plain build keeps RelWithDebInfo.
if(POLYPLUG_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(POLYPLUG_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT POLYPLUG_SANITIZE STREQUAL "")
  message(FATAL_ERROR "POLYPLUG_SANITIZE must be '', 'address' or 'thread', not '${POLYPLUG_SANITIZE}'")
endif()
if(NOT POLYPLUG_SANITIZE STREQUAL "")
  add_compile_options(-O1 $<IF:$<CXX_COMPILER_ID:Clang>,-gline-tables-only,-g1>)
endif()
