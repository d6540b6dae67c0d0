% Times Hinton's ffnew.m, unmodified, for MAXEPOCH epochs (from the environment) and its final
% test. FFCODE names the folder(s), ':'-separated, that hold his .m files (ffcode.zip from his
% home page; a softmax.m where it lacks one), MNISTMAT the file make_mat.py wrote. His plotting calls are made no-ops by shims/ (no display here).
here = fileparts(mfilename('fullpath'));
warning('off', 'all');
addpath(fullfile(here, 'shims'), '-begin');
addpath(getenv('FFCODE'));
load(getenv('MNISTMAT'));
restart = 1;
maxepoch = str2num(getenv('MAXEPOCH'));
t0 = tic;
ffnew;
fprintf(1, 'WALL %.2f s for %d epochs and the final test\n', toc(t0), maxepoch);
