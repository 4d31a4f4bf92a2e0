/* Rows for the attention group (see tests/rows.h). */
#include "../rows.h"

const test_row rows_attention[] = {
    ROW_END,
};
