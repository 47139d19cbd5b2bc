/* codec_demo - placeholder demo until the chat server exists: builds the
 * benchmark payload, prints it. Replaced by the chat demo later. */
#include <stdio.h>
#include "pb/value.h"

int main(void) {
    pb_arena *a = pb_arena_new(0);
    if (!a) return 1;
    pb_value *l = pb_list(a, 3);
    for (int i = 0; i < 3; i++) {
        pb_value *d = pb_dict(a, 3);
        char name[32];
        snprintf(name, sizeof name, "benchmark-item-%05d", i);
        pb_dict_append(a, d, pb_strz(a, "id"), pb_int(a, i));
        pb_dict_append(a, d, pb_strz(a, "name"), pb_strz(a, name));
        pb_dict_append(a, d, pb_strz(a, "score"), pb_float(a, i * 1.25));
        pb_seq_append(a, l, d);
    }
    printf("built a list of %zu dicts\n", pb_len(l));
    pb_arena_free(a);
    return 0;
}
