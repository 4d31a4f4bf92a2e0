/* Rows for the elementwise group (see tests/rows.h). */
#include "../rows.h"

const test_row rows_elementwise[] = {
    ROW_END,
};
