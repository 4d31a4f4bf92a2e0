/* Rows for the nn group (see tests/rows.h). */
#include "../rows.h"

const test_row rows_nn[] = {
    ROW_END,
};
