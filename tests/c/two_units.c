/* A second translation unit including the header: the two must link together. */
#include <tether.h>

const char *tether_test_second_unit(void) { return tether_version(); }
