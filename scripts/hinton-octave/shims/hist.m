% A no-op in place of Octave's hist: the timed script's plots are not drawn.
function varargout = hist(varargin)
  varargout = cell(1, nargout);
end
