/* Rows for the act group (see tests/rows.h). */
#include "../rows.h"

const test_row rows_act[] = {
    ROW_END,
};
