// A copy of the project's reference program ../shared/baseline/spsc64.c, unchanged below this
// line: benches/shm.rs builds it with the C compiler and runs it in the same run as the Ring.
// SPSC ring of fixed 64-byte slots between two processes (fork), pinned to CPUs 0 and 1, each side
// caching the other's index and publishing its own every 16 messages; every message verified.
// The small-message floor for any shared-memory ring on this machine: gcc -O2 spsc64.c && ./a.out [N]
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>
#define SLOTS (1<<16)   /* 4 MiB of 64 B slots */
struct ring { _Alignas(64) volatile uint64_t head; char p1[56]; _Alignas(64) volatile uint64_t tail; char p2[56]; _Alignas(64) unsigned char slot[SLOTS][64]; };
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);sched_setaffinity(0,sizeof s,&s);}
int main(int argc,char**argv){ uint64_t N= argc>1? strtoull(argv[1],0,10): 50000000ull;
  struct ring*r=mmap(0,sizeof *r,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0); memset(r,0,sizeof *r);
  pid_t pid=fork();
  if(pid==0){ pin(1); uint64_t tail=0, head_cache=0, sum=0; 
    while(tail<N){ if(tail==head_cache){ do head_cache=__atomic_load_n(&r->head,__ATOMIC_ACQUIRE); while(head_cache==tail); }
      unsigned char*s=r->slot[tail&(SLOTS-1)]; uint64_t w[8]; memcpy(w,s,64); if(w[0]!=tail||w[7]!=tail){fprintf(stderr,"bad %lu\n",tail);_exit(1);} for(int i=1;i<7;i++)sum+=w[i];
      tail++; if((tail&15)==0||tail==head_cache) __atomic_store_n(&r->tail,tail,__ATOMIC_RELEASE); }
    __atomic_store_n(&r->tail,tail,__ATOMIC_RELEASE); _exit(sum==12345?2:0);}
  pin(0); uint64_t head=0, tail_cache=0; double t0=now();
  while(head<N){ if(head-tail_cache>=SLOTS){ do tail_cache=__atomic_load_n(&r->tail,__ATOMIC_ACQUIRE); while(head-tail_cache>=SLOTS);} 
    uint64_t w[8]; w[0]=head; for(int i=1;i<7;i++) w[i]=head*i; w[7]=head; memcpy(r->slot[head&(SLOTS-1)],w,64);
    head++; if((head&15)==0||head==N) __atomic_store_n(&r->head,head,__ATOMIC_RELEASE); }
  int st; waitpid(pid,&st,0); double t=now()-t0; printf("%lu msgs of 64 B in %.3f s: %.1f M msg/s (child %d)\n",N,t,N/t/1e6,WEXITSTATUS(st)); return 0;}
