# A must-not-compile check: builds TARGET in BUILD_DIR and passes only if the build fails
# AND its output holds the library's own message, the regular expression on SOURCE's
# "// expect: " line (a failure for any other reason, or a build that succeeds, fails).
# Usage: cmake -DBUILD_DIR=... -DTARGET=... -DSOURCE=... -P check.cmake
file(STRINGS "${SOURCE}" expect REGEX "^// expect: ")
string(REPLACE "// expect: " "" expect "${expect}")
if(expect STREQUAL "")
  message(FATAL_ERROR "${SOURCE} has no '// expect: ' line")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --target "${TARGET}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but it must not:\n${out}")
endif()
if(NOT out MATCHES "${expect}")
  message(FATAL_ERROR "${TARGET} failed to compile without the message '${expect}':\n${out}")
endif()
message(STATUS "${TARGET} rejected with: ${CMAKE_MATCH_0}")
