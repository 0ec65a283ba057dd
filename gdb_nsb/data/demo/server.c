/* demo server: worker threads answer "requests" by calling quote_price();
 * the main thread prints what the workers answered, twice a second.
 * nsb demo live-patches quote_price() while it runs. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 4

static int loyalty_discount = 15;        /* percent; the patch starts honouring it */
static volatile long answered[WORKERS];
static volatile long last_price[WORKERS];

__attribute__((noinline)) long quote_price(long base, int quantity)
{
    /* v1: no discount at all (the bug the patch fixes) */
    return base * quantity;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    struct timespec pause = {0, 2 * 1000 * 1000}; /* 2 ms between requests */
    for (;;) {
        last_price[id] = quote_price(100, 3);
        answered[id]++;
        nanosleep(&pause, NULL);
    }
    return NULL;
}

int main(void)
{
    pthread_t t[WORKERS];
    if (getenv("DEMO_DISCOUNT"))
        loyalty_discount = atoi(getenv("DEMO_DISCOUNT"));
    for (long i = 0; i < WORKERS; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("demo-server pid %d: %d workers quoting 3 items at 100 (loyalty discount %d%%)\n",
           (int)getpid(), WORKERS, loyalty_discount);
    for (;;) {
        usleep(500 * 1000);
        long total = 0;
        for (int i = 0; i < WORKERS; i++)
            total += answered[i];
        printf("  requests answered: %6ld   quote for 3 x 100: %ld\n", total, last_price[0]);
    }
}
