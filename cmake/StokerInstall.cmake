# `cmake --install`: the libraries, the public headers, a CMake package
# (find_package(stoker) gives stoker::stoker) and a pkg-config file (stoker.pc).
include(CMakePackageConfigHelpers)

set(STOKER_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/stoker")

# Exported as stoker::common, stoker::transport and stoker::gpu, the names of the in-tree aliases.
set_target_properties(stoker_common PROPERTIES EXPORT_NAME common)
set_target_properties(stoker_control_proto PROPERTIES EXPORT_NAME control_proto)
set_target_properties(stoker_transport PROPERTIES EXPORT_NAME transport)
set_target_properties(stoker_client PROPERTIES EXPORT_NAME client)
set_target_properties(stoker_gpu PROPERTIES EXPORT_NAME gpu)
install(TARGETS stoker stoker_common stoker_control_proto stoker_transport stoker_client stoker_gpu EXPORT stokerTargets)
install(DIRECTORY include/stoker/ DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/stoker"
        FILES_MATCHING PATTERN "*.h")

install(EXPORT stokerTargets NAMESPACE stoker:: DESTINATION "${STOKER_INSTALL_CMAKEDIR}")
configure_package_config_file(cmake/stokerConfig.cmake.in stokerConfig.cmake
                              INSTALL_DESTINATION "${STOKER_INSTALL_CMAKEDIR}")
write_basic_package_version_file(stokerConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES "${PROJECT_BINARY_DIR}/stokerConfig.cmake"
              "${PROJECT_BINARY_DIR}/stokerConfigVersion.cmake"
              cmake/FindUCX.cmake
        DESTINATION "${STOKER_INSTALL_CMAKEDIR}")

# stoker.pc finds its prefix from its own directory, as the CMake package does,
# so it stays right when `cmake --install --prefix` picks another prefix.
string(REGEX REPLACE "[^/]+" ".." STOKER_PC_PREFIX "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
if(STOKER_HAVE_CUDA)
  set(STOKER_PC_CUDA_LIBS "-L${CUDAToolkit_LIBRARY_DIR} -lcudart")
endif()
configure_file(cmake/stoker.pc.in stoker.pc @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/stoker.pc" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
