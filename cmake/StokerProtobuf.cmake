# stoker_protobuf_library(name proto...): a static library of the C++ code
# protoc generates for the given .proto files (paths relative to the current
# source dir). Protos are named by their path from the project root
# ("transport/control/control.proto"), so they can import one another and the
# generated headers are included as "transport/control/control.pb.h". The
# generated code is built without the project's warning flags and its headers
# are system headers to those who link the library.
function(stoker_protobuf_library name)
  set(sources)
  foreach(proto IN LISTS ARGN)
    get_filename_component(abs "${proto}" ABSOLUTE)
    file(RELATIVE_PATH rel "${PROJECT_SOURCE_DIR}" "${abs}")
    string(REGEX REPLACE "\\.proto$" "" stem "${rel}")
    set(out_cc "${PROJECT_BINARY_DIR}/${stem}.pb.cc")
    set(out_h "${PROJECT_BINARY_DIR}/${stem}.pb.h")
    add_custom_command(
      OUTPUT "${out_cc}" "${out_h}"
      COMMAND protobuf::protoc -I "${PROJECT_SOURCE_DIR}" --cpp_out "${PROJECT_BINARY_DIR}" "${abs}"
      DEPENDS "${abs}" protobuf::protoc
      COMMENT "protoc ${rel}"
      VERBATIM)
    list(APPEND sources "${out_cc}" "${out_h}")
  endforeach()
  add_library(${name} ${sources})
  target_include_directories(${name} SYSTEM PUBLIC $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}>)
  target_link_libraries(${name} PUBLIC protobuf::libprotobuf)
endfunction()
