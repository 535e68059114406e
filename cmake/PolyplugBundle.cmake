# polyplug_add_bundle(<target>
#     NAME <bundle name> VERSION <x.y.z> SOURCES <src>...
#     [PROVIDES <contract@major>...] [DEPENDS <contract@major>...]
#     [BUNDLE_DEPENDENCIES <name>...] [FUNCTION_COUNTS <contract@major=N>...]
#     [NEEDS_REINIT_ON_DEP_RELOAD] [LIBRARY_NAME <name>] [OUTPUT_DIR <dir>]
#     [KEEP_GNU_UNIQUE])   # tests only: reproduces the dlclose no-op
#
# Builds a bundle directory <OUTPUT_DIR> (default: <current binary dir>/<target>) that
# holds the shared library lib<LIBRARY_NAME>.so (default: the target name) and a
# manifest.toml whose id is FNV-1a 64 of NAME. The library is built with hidden
# visibility and -fno-gnu-unique: GCC's STB_GNU_UNIQUE symbols make dlclose a no-op, so
# a later dlopen would silently return the old code.
# The target property POLYPLUG_BUNDLE_DIR names the bundle directory.
if(NOT POLYPLUG_MKMANIFEST)
  set(POLYPLUG_MKMANIFEST polyplug-mkmanifest)
endif()

function(polyplug_add_bundle target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "NEEDS_REINIT_ON_DEP_RELOAD;KEEP_GNU_UNIQUE"
    "NAME;VERSION;LIBRARY_NAME;OUTPUT_DIR"
    "SOURCES;PROVIDES;DEPENDS;BUNDLE_DEPENDENCIES;FUNCTION_COUNTS")
  if(NOT arg_NAME OR NOT arg_SOURCES)
    message(FATAL_ERROR "polyplug_add_bundle(${target}): NAME and SOURCES are required")
  endif()
  if(NOT arg_VERSION)
    set(arg_VERSION "0.1.0")
  endif()
  if(NOT arg_LIBRARY_NAME)
    set(arg_LIBRARY_NAME ${target})
  endif()
  if(NOT arg_OUTPUT_DIR)
    set(arg_OUTPUT_DIR ${CMAKE_CURRENT_BINARY_DIR}/${target})
  endif()

  add_library(${target} MODULE ${arg_SOURCES})
  target_link_libraries(${target} PRIVATE polyplug::abi)
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    OUTPUT_NAME ${arg_LIBRARY_NAME}
    LIBRARY_OUTPUT_DIRECTORY ${arg_OUTPUT_DIR}
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    POLYPLUG_BUNDLE_DIR ${arg_OUTPUT_DIR})
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror)
  if(NOT arg_KEEP_GNU_UNIQUE)
    # GCC only: clang never emits STB_GNU_UNIQUE symbols (and does not know the flag).
    target_compile_options(${target} PRIVATE
      $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-fno-gnu-unique>)
  endif()

  set(manifest_args --out ${arg_OUTPUT_DIR}/manifest.toml --name ${arg_NAME}
      --version ${arg_VERSION} --file lib${arg_LIBRARY_NAME}.so)
  foreach(p IN LISTS arg_PROVIDES)
    list(APPEND manifest_args --provides ${p})
  endforeach()
  foreach(d IN LISTS arg_DEPENDS)
    list(APPEND manifest_args --depends ${d})
  endforeach()
  foreach(b IN LISTS arg_BUNDLE_DEPENDENCIES)
    list(APPEND manifest_args --bundle-dependency ${b})
  endforeach()
  foreach(f IN LISTS arg_FUNCTION_COUNTS)
    list(APPEND manifest_args --function-count ${f})
  endforeach()
  if(arg_NEEDS_REINIT_ON_DEP_RELOAD)
    list(APPEND manifest_args --needs-reinit-on-dep-reload)
  endif()
  add_custom_command(
    OUTPUT ${arg_OUTPUT_DIR}/manifest.toml
    COMMAND ${POLYPLUG_MKMANIFEST} ${manifest_args}
    DEPENDS ${POLYPLUG_MKMANIFEST}
    COMMENT "Writing manifest for bundle ${arg_NAME}"
    VERBATIM)
  add_custom_target(${target}_manifest DEPENDS ${arg_OUTPUT_DIR}/manifest.toml)
  add_dependencies(${target} ${target}_manifest)
endfunction()
