# polyplug_project_warnings(<target>): the warning set every project target builds with.
function(polyplug_project_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror)
endfunction()
