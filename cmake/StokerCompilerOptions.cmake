# Warnings (errors with STOKER_WERROR, as CI builds) and sanitizers, applied to
# every target the project defines through stoker_target_options().
add_library(stoker_compile_options INTERFACE)
target_compile_options(stoker_compile_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wold-style-cast -Wcast-align -Wconversion -Wsign-conversion -Wnull-dereference
    -Wimplicit-fallthrough
    # Options structs are filled with designated initializers that name only
    # what differs from the defaults; GCC would flag every one of them.
    -Wno-missing-field-initializers>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${STOKER_WERROR}>>:-Werror>
  $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${STOKER_WERROR}>>:-Werror=all-warnings>)
if(STOKER_SANITIZE)
  target_compile_options(stoker_compile_options INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined -fno-omit-frame-pointer
      -fno-sanitize-recover=undefined>)
  target_link_options(stoker_compile_options INTERFACE -fsanitize=address,undefined)
endif()

# Private build settings for a target of this project.
function(stoker_target_options target)
  target_link_libraries(${target} PRIVATE $<BUILD_INTERFACE:stoker_compile_options>)
endfunction()
