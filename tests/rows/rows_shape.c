/* Rows for the shape group (see tests/rows.h). */
#include "../rows.h"

const test_row rows_shape[] = {
    ROW_END,
};
