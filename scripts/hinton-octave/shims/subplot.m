% A no-op in place of Octave's subplot: the timed script's plots are not drawn.
function varargout = subplot(varargin)
  varargout = cell(1, nargout);
end
