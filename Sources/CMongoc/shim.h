// libmongoc (and libbson) are blocking; MongoStore calls them only from its thread pool.
#include <mongoc/mongoc.h>
