# Sanitizer builds apply to everything the project compiles, bundles included, so that a
# bundle's code is instrumented the same way as the runtime that calls it.
if(POLYPLUG_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(POLYPLUG_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT POLYPLUG_SANITIZE STREQUAL "")
  message(FATAL_ERROR "POLYPLUG_SANITIZE must be '', 'address' or 'thread', not '${POLYPLUG_SANITIZE}'")
endif()
