// hiredis is used only to encode commands and parse replies; the socket belongs to SwiftNIO.
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
