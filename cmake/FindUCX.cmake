# Finds UCX (ucp, uct, ucs). Any UCX >= 1.12 will do: Debian's, HPC-X or a
# CUDA-enabled build. Looks in UCX_ROOT first, then pkg-config, then the
# system. Defines UCX::ucp and UCX_VERSION.
find_package(PkgConfig QUIET)
if(UCX_ROOT)
  set(_ucx_hints "${UCX_ROOT}/include" "${UCX_ROOT}/lib" "${UCX_ROOT}/lib64")
elseif(DEFINED ENV{UCX_ROOT})
  set(_ucx_hints "$ENV{UCX_ROOT}/include" "$ENV{UCX_ROOT}/lib" "$ENV{UCX_ROOT}/lib64")
elseif(PkgConfig_FOUND)
  pkg_check_modules(PC_UCX QUIET ucx)
  set(_ucx_hints ${PC_UCX_INCLUDE_DIRS} ${PC_UCX_LIBRARY_DIRS})
endif()

find_path(UCX_INCLUDE_DIR ucp/api/ucp.h HINTS ${_ucx_hints})
foreach(_lib ucp uct ucs)
  find_library(UCX_${_lib}_LIBRARY ${_lib} HINTS ${_ucx_hints})
endforeach()

if(UCX_INCLUDE_DIR AND EXISTS "${UCX_INCLUDE_DIR}/ucp/api/ucp_version.h")
  file(STRINGS "${UCX_INCLUDE_DIR}/ucp/api/ucp_version.h" _ucx_ver
       REGEX "#define UCP_API_(MAJOR|MINOR) ")
  string(REGEX REPLACE ".*MAJOR +([0-9]+).*" "\\1" _maj "${_ucx_ver}")
  string(REGEX REPLACE ".*MINOR +([0-9]+).*" "\\1" _min "${_ucx_ver}")
  set(UCX_VERSION "${_maj}.${_min}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(UCX
  REQUIRED_VARS UCX_INCLUDE_DIR UCX_ucp_LIBRARY UCX_uct_LIBRARY UCX_ucs_LIBRARY
  VERSION_VAR UCX_VERSION)

if(UCX_FOUND AND NOT TARGET UCX::ucp)
  add_library(UCX::ucs UNKNOWN IMPORTED)
  set_target_properties(UCX::ucs PROPERTIES IMPORTED_LOCATION "${UCX_ucs_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${UCX_INCLUDE_DIR}")
  add_library(UCX::uct UNKNOWN IMPORTED)
  set_target_properties(UCX::uct PROPERTIES IMPORTED_LOCATION "${UCX_uct_LIBRARY}"
                        INTERFACE_LINK_LIBRARIES UCX::ucs)
  add_library(UCX::ucp UNKNOWN IMPORTED)
  set_target_properties(UCX::ucp PROPERTIES IMPORTED_LOCATION "${UCX_ucp_LIBRARY}"
                        INTERFACE_LINK_LIBRARIES "UCX::uct;UCX::ucs")
endif()
mark_as_advanced(UCX_INCLUDE_DIR UCX_ucp_LIBRARY UCX_uct_LIBRARY UCX_ucs_LIBRARY)
