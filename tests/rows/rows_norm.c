/* Rows for the norm group (see tests/rows.h). */
#include "../rows.h"

const test_row rows_norm[] = {
    ROW_END,
};
