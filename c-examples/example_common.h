/*
 * What every tether example shares: report a failure with its result name and the
 * library's message, then exit.
 */
#ifndef TETHER_EXAMPLE_COMMON_H
#define TETHER_EXAMPLE_COMMON_H

#include <tether.h>

#include <stdio.h>
#include <stdlib.h>

static void check(tether_result r, const char *what) {
    char message[512];
    size_t len = 0;
    if (r == TETHER_RESULT_OK) return;
    if (tether_last_error(message, sizeof message, &len) != TETHER_RESULT_OK) message[0] = '\0';
    fprintf(stderr, "%s: %s: %s\n", what, tether_result_name((uint32_t)r), message);
    exit(1);
}

#endif
