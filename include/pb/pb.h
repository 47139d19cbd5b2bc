/** pb/pb.h - umbrella header: everything libpb offers. @file */
#ifndef PB_PB_H
#define PB_PB_H
#include "pb/error.h"
#include "pb/value.h"
#include "pb/banana.h"
#include "pb/jelly.h"
#include "pb/deferred.h"
#include "pb/broker.h"
#include "pb/transport.h"
#include "pb/cred.h"
#endif
