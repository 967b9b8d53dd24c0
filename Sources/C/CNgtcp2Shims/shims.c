#include "CNgtcp2Shims.h"
