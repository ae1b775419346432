# C tests: the engine test runs its HTTP server in threads.
CTEST_LIBS += -lpthread
