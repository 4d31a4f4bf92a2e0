/* Rows for the conv group (see tests/rows.h). */
#include "../rows.h"

const test_row rows_conv[] = {
    ROW_END,
};
