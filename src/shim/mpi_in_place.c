/* MPI_IN_PLACE is a macro whose value each MPI implementation chooses (Open MPI's is
 * (void *) 1, MPICH's (void *) -1), and rsmpi does not export it; this returns the value
 * of the mpi.h the binary is built against, so the gradient all-reduce can sum a buffer
 * in place instead of through a second copy. */
#include <mpi.h>

void *biobert_mpi_in_place(void) { return MPI_IN_PLACE; }
