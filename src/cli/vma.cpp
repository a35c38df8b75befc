// placeholder entry point, replaced by the vma command (issue: VMA engine)
#include <cstdio>
int main()
{
    std::fprintf(stderr, "vma: not built yet\n");
    return 1;
}
