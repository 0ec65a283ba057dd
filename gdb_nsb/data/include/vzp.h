/*
 * The original tool's patches include the header as <include/vzp.h>;
 * $(nsb cflags) puts the directory above this one on the include path.
 */
#include "../vzp.h"
