# What `cmake --install` puts under the prefix:
#   bin/rsam                          the CLI
#   lib/librsam.so*                   the library of include/rsam/rsam.h
#   include/rsam/                     its public header
#   share/rsam/models/                the bundled rsam-tiny, its GaRA adapter and GleSAM enhancer
#   lib/cmake/rsam/                   find_package(rsam CONFIG) -> rsam::rsam
#   lib/pkgconfig/rsam.pc             pkg-config --cflags --libs rsam
#   lib/python3.X/dist-packages/rsam  the Python module (python/CMakeLists.txt)
include(CMakePackageConfigHelpers)

# A LibTorch outside the system paths stays found by the installed CLI.
set_target_properties(rsam PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
install(TARGETS rsam RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS rsam_lib EXPORT rsamTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/rsam DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# model/bundled.cpp looks here (beside bin/ and beside lib/).
install(FILES
  ${PROJECT_SOURCE_DIR}/models/rsam-tiny.safetensors ${PROJECT_SOURCE_DIR}/models/rsam-tiny.json
  ${PROJECT_SOURCE_DIR}/models/rsam-tiny-gara.safetensors ${PROJECT_SOURCE_DIR}/models/rsam-tiny-gara.json
  ${PROJECT_SOURCE_DIR}/models/rsam-tiny-glesam.json
  DESTINATION ${CMAKE_INSTALL_DATADIR}/rsam/models)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/models/rsam-tiny-glesam DESTINATION ${CMAKE_INSTALL_DATADIR}/rsam/models)

set(RSAM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/rsam)
install(EXPORT rsamTargets NAMESPACE rsam:: DESTINATION ${RSAM_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/rsamConfig.cmake.in
  ${CMAKE_BINARY_DIR}/cmake/rsamConfig.cmake INSTALL_DESTINATION ${RSAM_CMAKE_DIR} PATH_VARS CMAKE_INSTALL_DATADIR)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/cmake/rsamConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/cmake/rsamConfig.cmake ${CMAKE_BINARY_DIR}/cmake/rsamConfigVersion.cmake
  DESTINATION ${RSAM_CMAKE_DIR})

# The .pc names its prefix relative to its own folder, so the package can be
# installed with `cmake --install --prefix` anywhere.
file(RELATIVE_PATH RSAM_PC_TO_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
configure_file(${PROJECT_SOURCE_DIR}/cmake/rsam.pc.in ${CMAKE_BINARY_DIR}/cmake/rsam.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/cmake/rsam.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
