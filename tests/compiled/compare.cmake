# Runs the training program built header-only (HEADER) and against siam::compiled (LIBRARY),
# each writing its models to its own folder under OUT, and fails unless both print the
# same losses and weight hashes and save byte-identical model files.
foreach(kind HEADER LIBRARY)
  file(REMOVE_RECURSE ${OUT}/${kind})
  file(MAKE_DIRECTORY ${OUT}/${kind})
  execute_process(COMMAND ${${kind}} ${OUT}/${kind} RESULT_VARIABLE rc OUTPUT_VARIABLE out_${kind}
                  ERROR_VARIABLE err)
  message(STATUS "${kind}:\n${out_${kind}}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "test_compiled: the ${kind} program failed (${rc})")
  endif()
endforeach()
if(NOT out_HEADER STREQUAL out_LIBRARY OR out_HEADER STREQUAL "")
  message(FATAL_ERROR "test_compiled: header-only and compiled outputs differ")
endif()
foreach(model mlp.siam lenet.siam)
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${OUT}/HEADER/${model}
                  ${OUT}/LIBRARY/${model} RESULT_VARIABLE same)
  if(NOT same EQUAL 0)
    message(FATAL_ERROR "test_compiled: ${model} differs between header-only and compiled")
  endif()
endforeach()
message(STATUS "test_compiled: identical losses, weights and model files")
